"""``rankpool.ExtremeScaleExecutor``: a Parsl executor whose blocks are MPI pools (its hops on
the data path: ``docs/internals.md``). Parsl's ``JobStatusPoller`` polls, scales out and in
through the provider; each block is one MPI pool.

The executor starts the interchange at :meth:`start` and launches the provider's
``init_blocks`` at once (Parsl's strategy would only do it on its first tick, seconds later).
Tasks go to the interchange as they are submitted; results come back on the client's thread,
which settles the futures. Blocks come and go through Parsl's provider and scaling strategy,
with capacity counted in worker ranks. The monitoring database gets ``block`` rows from the
scaling calls, ``node`` rows (one per pool host) from a watcher thread, and ``try``/``status``/
``resource`` rows from Parsl's monitoring wrapper inside the worker ranks, which reports
through :attr:`remote_monitoring_radio` (Parsl's filesystem radio by default). How it answers
Parsl's block machinery (launch, scale out and in, failed starts) is :mod:`.block_hooks`; its
views of the pools, :mod:`.views`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, cast

from parsl.executors.errors import BadStateException
from parsl.executors.status_handling import BlockProviderExecutor
from parsl.monitoring.radios.base import RadioConfig
from parsl.monitoring.radios.filesystem import FilesystemRadio
from parsl.providers.base import ExecutionProvider
from parsl.utils import RepresentationMixin

from ...errors import BrokenPool, ExecutorShutdown, VersionMismatch
from ...launchers.jobscript import write_pool_script
from ...launchers.local_launcher import LocalMpiexecLauncher, local_provider
from ...launchers.shape import block_shape
from ...mpi_pool.config import PoolConfig
from ...protocol import messages as protocol
from ...protocol.messages import LostCause, RefusalCause
from ...protocol.wire import MAX_MESSAGE_SIZE, check_max_message_size
from ...shm.plane import FrontEndPlane, check_cap, choose_shared_memory
from ...task.injection import PerFunction
from ...task.node_resources import block_devices, node_resources, node_workers
from ...task.resources import check_fits, parse_spec
from ..engine import Engine
from ..session import SessionOptions, start_session
from ..settling import fail_all
from .block_hooks import BlockHooks
from .checks import (
    SPEC_KWARG,
    ReraiseWrapped,
    check_arguments,
    declares_spec,
    parsl_counts,
)
from .scaling import BlockControl
from .views import PoolViews

__all__ = ["ExtremeScaleExecutor", "LocalMpiexecLauncher", "local_provider"]

log = logging.getLogger(__name__)


class ExtremeScaleExecutor(PoolViews, BlockHooks, RepresentationMixin):
    """Parsl executor running tasks on MPI pools, one pool per block; tasks may span ranks.

    A task's ``parsl_resource_specification`` may hold ``num_ranks`` (or ``ranks_per_node`` and
    ``num_nodes``), ``results`` (``"root"`` or ``"all"``), ``priority`` (higher runs first:
    note that this is the opposite of HighThroughputExecutor's order) and ``walltime``
    (seconds); anything else is refused at submit, as is a task wider than a block. A
    multi-rank task's function receives its communicator as its ``comm`` parameter (or as a
    ``None`` first argument). The ``parsl_resource_specification`` keyword that Parsl passes on
    to the function is kept for functions that declare a parameter of that name or take
    ``**kwargs`` (for a bash app, the decorated function is the one looked at) and dropped for
    all others, so apps need not declare it.

    Arguments (keyword only, checked at once):

    ``provider``: a Parsl provider whose launcher starts the block as ONE MPI application
    (default: :func:`local_provider`, one local block under the bundled ``mpiexec``);
    ``ranks_per_node``: handed to the launcher unchanged, it counts what the launcher counts.
    With a rankpool launcher (``rankpool.launchers``: ``SrunLauncher``, ``MpiexecLauncher``,
    ...) it is every MPI rank on a node, the manager (rank 0) included: a block of N nodes has
    ``N * ranks_per_node`` ranks and one fewer workers, and its first node one worker fewer
    than the others. With the local default, a ``launch_cmd``, or a launcher rankpool does
    not know, it is worker ranks, the manager being one process more. Default: the
    provider's ``cores_per_node``, else (local) this machine's cores;
    ``allow_per_node_launcher``: accept Parsl's own launchers (``SrunLauncher``,
    ``MpiExecLauncher``, ``SingleNodeLauncher``, ...), which start one copy of the pool per
    node instead of one MPI application per block; refused by default, since a block would
    not get the shape promised. Each node's copy is then its own pool of ``ranks_per_node``
    MPI ranks, started by ``launch_cmd`` (e.g. ``"mpiexec -n {ranks} {command}"``);
    ``address``: the interface pools connect to (default loopback for a local provider, every
    interface otherwise); ``pool_port``/``port_range``: a fixed port, or a range, for pools;
    ``heartbeat_period``/``heartbeat_threshold``: seconds; a pool silent past the threshold is
    lost and its tasks fail with :class:`~rankpool.errors.ManagerLost` (Parsl retries them);
    ``drain_period``: seconds after which a block's pool is drained (finishes its tasks, takes
    no more, exits), to end before the job's walltime; ``encrypted``: CurveZMQ on every
    interchange socket with keys made for the run in ``<run dir>/<label>/curve``, which pools
    read (a shared file system); default (None): on, loopback included; False turns it off
    and logs a warning naming the risk; ``max_message_size``: the largest message every socket
    of the run takes (default 1 GiB; see :class:`rankpool.Executor`);
    ``working_dir``: directory the ranks run in;
    ``worker_debug``: DEBUG logs from the pool and one log per worker rank; ``launch_cmd``: a
    format string for the block's command around ``{command}`` (fields: ``block_id``,
    ``ranks``, ``workers``, ``ranks_per_node``, ``nodes_per_block``, ``interchange``,
    ``python``, ``mpiexec``), e.g. ``"mpiexec -n {ranks} {command}"`` with Parsl's
    ``SimpleLauncher``; ``managed``: False is job-script mode: no blocks are submitted nor
    scaled; start pools yourself with :meth:`pool_command` (also written, with the
    interchange's ports, to ``pool_command.sh`` and ``interchange.json`` in the run directory
    ``<parsl run dir>/<label>``; a provider, if given, only describes the blocks' shape for
    submit's checks); ``remote_monitoring_radio``: how worker ranks reach
    monitoring (default Parsl's ``FilesystemRadio``; ``UDPRadio`` where no file system is shared);
    ``accelerators`` (per node: a count or a list of device ids, as HTEX's
    ``available_accelerators``), ``accelerator_env`` (the variable carrying a rank's device, or
    ``nvidia``/``amd``/``intel``), ``ranks_per_accelerator`` and ``cpu_affinity`` (``"none"``,
    ``"block"``, ``"alternating"`` or CPUs per local rank): each pool binds its worker ranks
    when it starts (see the node-resources page); tasks then ask for ``gpus_per_rank``;
    ``shared_memory``: large buffers (arguments and results of at least 256 KiB) between this
    process and worker ranks on this host travel through reusable ``/dev/shm`` segments
    instead of messages (see :mod:`rankpool.shm.arena`); default (None): on when blocks run on this
    host (a ``LocalProvider`` with :class:`LocalMpiexecLauncher`, the default) and pools are
    ``managed``, off otherwise; True asserts that every block runs on this host;
    ``shared_memory_cap``: most bytes of segments one process holds (default 4 GiB).
    """

    def __init__(self, *, label: str = "ExtremeScaleExecutor",
                 provider: ExecutionProvider | None = None, ranks_per_node: int | None = None,
                 address: str | None = None, pool_port: int = 0,
                 port_range: tuple[int, int] | None = None, heartbeat_period: float = 2.0,
                 heartbeat_threshold: float = 10.0, drain_period: float | None = None,
                 encrypted: bool | None = None, working_dir: str | None = None,
                 worker_debug: bool = False, launch_cmd: str | None = None, managed: bool = True,
                 allow_per_node_launcher: bool = False,
                 storage_access: list[Any] | None = None,
                 block_error_handler: bool | Callable[..., None] = True,
                 remote_monitoring_radio: RadioConfig | None = None,
                 log_level: str = "INFO",
                 accelerators: int | str | Sequence[str] | None = None,
                 accelerator_env: str | None = None, ranks_per_accelerator: int = 1,
                 cpu_affinity: str | Sequence[Any] = "none",
                 shared_memory: bool | None = None, shared_memory_cap: int | None = None,
                 max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        resources = node_resources(accelerators, accelerator_env, ranks_per_accelerator,
                                   cpu_affinity)
        check_arguments(label=label, provider=provider, ranks_per_node=ranks_per_node,
                        address=address, pool_port=pool_port, port_range=port_range,
                        heartbeat_period=heartbeat_period, heartbeat_threshold=heartbeat_threshold,
                        drain_period=drain_period, encrypted=encrypted, worker_debug=worker_debug,
                        managed=managed, allow_per_node_launcher=allow_per_node_launcher,
                        working_dir=working_dir, launch_cmd=launch_cmd,
                        log_level=log_level, remote_monitoring_radio=remote_monitoring_radio)
        if provider is None:
            provider = local_provider()
        self._use_shm = choose_shared_memory(shared_memory,
                                             local=managed and _blocks_here(provider))
        self._shm_cap = check_cap(shared_memory_cap)
        self.max_message_size = check_max_message_size(max_message_size)
        self.shared_memory = shared_memory
        self.shared_memory_cap = shared_memory_cap
        shape = block_shape(provider, ranks_per_node, launch_cmd,
                            allow_per_node=allow_per_node_launcher)

        devices = block_devices(resources, node_workers(shape.worker_ranks, shape.nodes,
                                                        shape.widest_task))

        BlockProviderExecutor.__init__(self, provider=provider,
                                       block_error_handler=block_error_handler)
        self.accelerators = accelerators
        self.accelerator_env = accelerator_env
        self.ranks_per_accelerator = ranks_per_accelerator
        self.cpu_affinity = cpu_affinity
        self.node_resources = resources
        self._devices = devices
        self.label = label
        self.ranks_per_node = shape.ranks_per_node
        self.address = address
        self.pool_port = pool_port
        self.port_range = port_range
        self.heartbeat_period = heartbeat_period
        self.heartbeat_threshold = heartbeat_threshold
        self.drain_period = drain_period
        self.encrypted = encrypted
        self.working_dir = working_dir
        self.worker_debug = worker_debug
        self.launch_cmd = launch_cmd
        self.managed = managed
        self.allow_per_node_launcher = allow_per_node_launcher
        self.storage_access = storage_access
        self.log_level = log_level.upper()
        self.remote_monitoring_radio = remote_monitoring_radio or FilesystemRadio()
        self._shape = shape
        self._client: Any = None
        self._pool_base: PoolConfig | None = None
        self._engine = Engine()
        self._engine.max_message_size = self.max_message_size
        # Parsl's table of the executor's futures: the engine's own (Parsl types it
        # dict[object, Future] and only reads it)
        self._tasks = cast(dict[object, Future[Any]], self._engine.futures)
        # Parsl apps return a RemoteExceptionWrapper instead of raising; on a rank other than the
        # task's root that value would be dropped and the task reported a success, so multi-rank
        # functions are wrapped to raise it (one wrapper per function: serialized once)
        self._reraising = PerFunction(ReraiseWrapped)
        self._keeps_spec = PerFunction(declares_spec)  # accepts parsl_resource_specification
        self._skip_init: int | None = None
        self._closed = False
        self._control = BlockControl(self)

    @property
    def executor_dir(self) -> str:
        """This executor's own directory, ``<parsl run dir>/<label>`` (e.g. ``runinfo/000/xs``):
        its logs, ``interchange.json`` and ``pool_command.sh``; what ``rankpool status`` reads,
        and the ``RUN_DIR`` a job script of job-script mode runs ``pool_command.sh`` from."""
        return os.path.join(self.run_dir, self.label)

    # -- life cycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the interchange, then the provider's ``init_blocks`` (without waiting for them)."""
        super().start()  # type: ignore[no-untyped-call]  # Parsl's start is unannotated
        address = self.address or ("127.0.0.1" if isinstance(self.provider, _local_provider_type())
                                   else "*")
        session = start_session(
            SessionOptions(address=address, heartbeat_period=self.heartbeat_period,
                           heartbeat_threshold=self.heartbeat_threshold,
                           resources=self.node_resources,
                           run_dir=self.executor_dir, pool_port=self.pool_port,
                           port_range=self.port_range, encrypted=self.encrypted,
                           log_level=self.log_level, worker_debug=self.worker_debug,
                           shared_memory=self._use_shm, shared_memory_cap=self._shm_cap,
                           max_message_size=self.max_message_size),
            on_results=self._engine.resolve, on_lost=self._on_lost, on_broken=self._on_broken,
            on_refused=self._on_refused)
        self.log_dir = session.run_dir
        self._client = session.client
        self._engine.plane = session.plane
        self._pool_base = session.pool_config
        write_pool_script(self.log_dir, self._pool_base, getattr(self.provider, "launcher", None),
                          self._shape.nodes)
        log.info("%s: interchange up, pools connect to %s; blocks of %d worker ranks on %d node(s)",
                 self.label, self._client.pool_address, self._shape.worker_ranks,
                 self._shape.nodes)
        if self.managed and self.provider is not None:
            init = self.provider.init_blocks
            if init > 0:
                self.scale_out_facade(init)
            self._skip_init = init
        self._control.start_watcher(monitoring=self.submit_monitoring_radio is not None)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the interchange (its pools stop), end leftover blocks, fail what is left;
        idempotent."""
        if self._closed:
            return
        self._closed = True
        self._control.stop_watcher()
        if self._client is not None:
            self._client.stop(timeout)
        self._control.end_blocks(timeout)
        self._control.mark_pools_gone()
        self._engine.fail_remaining(ExecutorShutdown("the executor was shut down before the task "
                                                     "finished"))
        if self._engine.plane is not None:
            self._engine.plane.close()
        super().shutdown()
        log.info("%s: shut down", self.label)

    # -- Parsl's executor interface ---------------------------------------------------------------
    def submit(self, func: Callable[..., Any], resource_specification: dict[str, Any],
               *args: Any, **kwargs: Any) -> Future[Any]:
        """Send one task to the interchange; return its future (``parsl_executor_task_id`` set)."""
        if self.bad_state_is_set:
            raise self.executor_exception
        if self._closed or self._client is None:
            raise ExecutorShutdown(f"executor {self.label!r} is not running")
        spec = parse_spec(parsl_counts(resource_specification))
        check_fits(spec, self._shape.widest_task, self._shape.largest_node_task, self._devices)
        if SPEC_KWARG in kwargs and not self._keeps_spec(func):
            kwargs = {k: v for k, v in kwargs.items() if k != SPEC_KWARG}
        task, future = self._engine.task(func, args, kwargs, spec, carry_context=False,
                                         wrap=self._reraising if spec.num_ranks > 1 else None)
        # the attribute Parsl's DataFlowKernel reads off an executor's futures
        future.parsl_executor_task_id = future.task_id  # type: ignore[attr-defined]
        self._client.submit(task)
        return future

    def outstanding(self) -> int:
        """Worker ranks wanted by the tasks submitted and not finished (queued or running).

        Parsl's strategy compares this with ``active blocks * workers_per_node *
        nodes_per_block``, so both count ranks, not tasks: four queued 4-rank tasks ask for
        16 ranks' worth of blocks, where counting tasks would ask for four ranks' worth.
        """
        return self._engine.ranks

    def monitor_resources(self) -> bool:
        """Resource monitoring runs in every worker rank of a task (psutil, one process each)."""
        return True

    def set_bad_state_and_fail_all(self, exception: Exception) -> None:
        """The broken-state latch: record the cause once, fail every pending future, refuse
        submit."""
        pending = self._engine.latch(exception)
        if pending is None:
            return
        self._executor_exception = exception
        self._executor_bad_state.set()
        log.error("%s: bad state, failing %d pending tasks: %s", self.label, len(pending),
                  exception)
        fail_all(pending, BadStateException(self, exception))

    # -- callbacks from the client thread -------------------------------------------------------
    def _on_lost(self, msg: protocol.Lost) -> None:
        """A pool left: fail its in-flight tasks with ManagerLost (Parsl retries them)."""
        cause = msg.cause
        if msg.block_id and cause.had_registered:
            self._control.connected_ever.add(msg.block_id)
        if msg.task_ids:
            self._engine.lost(msg, f"{self.label}: ")
        elif cause is LostCause.DRAINED:
            log.info("%s: a pool of block %s left: %s", self.label, msg.block_id, msg.reason)
        else:
            log.warning("%s: a pool of block %s left: %s", self.label, msg.block_id, msg.reason)

    def _on_refused(self, msg: protocol.Refused) -> None:
        """A pool of another version was refused: no pool of this install can serve us."""
        if msg.cause is RefusalCause.VERSION_MISMATCH:
            self.set_bad_state_and_fail_all(VersionMismatch(msg.what, msg.ours, msg.theirs))

    def _on_broken(self, reason: str) -> None:
        if not self._closed:
            self.set_bad_state_and_fail_all(BrokenPool(f"the interchange was lost: {reason}"))

    @property
    def _plane(self) -> FrontEndPlane | None:
        """Shared memory for large buffers, when on (started)."""
        return self._engine.plane


def _blocks_here(provider: Any) -> bool:
    """Whether the provider's blocks run on this host: a ``LocalProvider`` whose launcher is
    :class:`LocalMpiexecLauncher` (other launchers may start ranks on other nodes)."""
    return isinstance(provider, _local_provider_type()) \
        and isinstance(getattr(provider, "launcher", None), LocalMpiexecLauncher)


def _local_provider_type() -> type:
    from parsl.providers import LocalProvider
    return LocalProvider
