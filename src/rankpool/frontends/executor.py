"""``rankpool.Executor``: a ``concurrent.futures`` executor over MPI pools, without Parsl.

    with Executor(max_ranks=4) as ex:     # an interchange + one local pool of 4 worker ranks
        print(ex.submit(pow, 2, 10).result())
        print(ex.requirements(num_ranks=2).submit(simulate, 3).result())

It starts an interchange process and one block: by default a local pool under the bundled
``mpiexec``, or a block of any Parsl ``ExecutionProvider`` (whose launcher must start one MPI
application per block). A local block that dies is replaced, so work submitted afterwards runs.
A block that ends before its pool registers is a failed start: it is diagnosed, logged and
recorded, and after ``max_failed_starts`` of them in a row the executor is broken with the
cause (:class:`~rankpool.errors.BlockStartFailed`). The blocks are watched until the close
stops them, through a ``shutdown`` that waits for pending futures (see :mod:`.block_watch`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from ..errors import ExecutorShutdown, VersionMismatch
from ..launchers.local import LocalBlocks
from ..launchers.mpiexec import find_mpiexec
from ..launchers.provider_blocks import ProviderBlocks
from ..launchers.shape import block_shape, local_shape
from ..protocol import messages as protocol
from ..protocol.batches import TaskRow
from ..protocol.messages import RefusalCause
from ..protocol.wire import MAX_MESSAGE_SIZE, check_max_message_size
from ..shm.plane import check_cap, choose_shared_memory
from ..task.initializer import dump_initializer, write_initializer
from ..task.node_resources import block_devices, node_resources, node_workers
from ..task.resources import Spec, check_fits
from .base import FrontEnd
from .block_watch import BlockWatch
from .engine import Engine
from .lifetime import Closer, close_when_dropped, weak
from .session import SessionOptions, start_session
from .task_future import TaskFuture

if TYPE_CHECKING:
    from .client import InterchangeClient

log = logging.getLogger(__name__)

def _positive(name: str, value: Any, kind: type = float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) \
            or value <= 0:
        raise ValueError(f"{name} must be a positive {'number' if kind is float else 'integer'}, "
                         f"got {value!r}")


class Executor(FrontEnd):
    """``concurrent.futures.Executor`` whose tasks run on MPI pools.

    ``max_ranks``: worker ranks of the block (the pool has one more rank, its manager);
    ``ranks_per_node``: with a provider, MPI ranks per node of its blocks (with a rankpool
    launcher the manager takes one slot of the first node: see :mod:`rankpool.launchers`);
    ``requirements``: default resource specification; ``provider``: a Parsl
    ``ExecutionProvider`` (default: a local block under the bundled ``mpiexec``);
    ``address``: the interface pools connect to (default loopback; set it to the login
    node's address for remote blocks); ``heartbeat_period``/``heartbeat_threshold``: seconds;
    ``run_dir``: logs and keys (default ``rankpool-runs/NNN`` under the current directory);
    ``trace``: record where and when every task ran (``rankpool trace RUN_DIR`` draws it);
    ``encrypted``: CurveZMQ on every interchange socket, with keys made for this run in
    ``run_dir/curve`` (pools read theirs there); default (None): on, loopback included (other
    users of the machine reach loopback too); False turns it off and logs a warning naming the
    risk; ``accelerators``, ``accelerator_env``, ``ranks_per_accelerator``,
    ``cpu_affinity``: the binding of worker ranks to devices and CPUs, applied when each pool
    starts (see :func:`rankpool.task.node_resources.node_resources` and the node-resources page);
    ``shared_memory``: large buffers (arguments and results of at least 256 KiB) between this
    process and worker ranks on this host travel through reusable ``/dev/shm`` segments
    instead of messages (see :mod:`rankpool.shm.arena`); default (None): on for the local block,
    off with a provider (True asserts that the provider's blocks run on this host);
    ``shared_memory_cap``: most bytes of segments one process holds (default 4 GiB); past it
    buffers travel as messages; ``max_message_size``: the largest message every socket of the
    run takes (default 1 GiB): a larger task is refused at submit, a larger result fails its
    task, both with :class:`~rankpool.errors.MessageTooLarge`; ``max_failed_starts``: blocks
    that may end in a row before their pool registers (a bad ``mpiexec``, a job that fails, a
    pool that cannot reach the interchange) before the executor gives up and fails its futures
    with the cause (default 1, as Parsl's default error handler with one initial block).
    """

    def __init__(self, *, max_ranks: int = 4, ranks_per_node: int | None = None,
                 requirements: Mapping[str, Any] | None = None, provider: Any = None,
                 address: str = "127.0.0.1", heartbeat_period: float = 2.0,
                 heartbeat_threshold: float = 10.0, run_dir: str | None = None,
                 mpiexec: str | None = None, log_level: str = "INFO",
                 trace: bool = False, encrypted: bool | None = None,
                 accelerators: int | str | Sequence[str] | None = None,
                 accelerator_env: str | None = None, ranks_per_accelerator: int = 1,
                 cpu_affinity: str | Sequence[Any] = "none",
                 shared_memory: bool | None = None, shared_memory_cap: int | None = None,
                 max_message_size: int = MAX_MESSAGE_SIZE, max_failed_starts: int = 1,
                 initializer: Callable[..., Any] | None = None,
                 initargs: Sequence[Any] = ()) -> None:
        super().__init__(requirements)
        init_payload = dump_initializer(initializer, initargs)
        use_shm = choose_shared_memory(shared_memory, local=provider is None)
        shm_cap = check_cap(shared_memory_cap)
        self._engine.max_message_size = check_max_message_size(max_message_size)
        self.node_resources = node_resources(accelerators, accelerator_env,
                                             ranks_per_accelerator, cpu_affinity)
        _positive("max_ranks", max_ranks, int)
        if ranks_per_node is not None:
            _positive("ranks_per_node", ranks_per_node, int)
        _positive("heartbeat_period", heartbeat_period)
        _positive("heartbeat_threshold", heartbeat_threshold)
        if heartbeat_threshold < heartbeat_period:
            raise ValueError("heartbeat_threshold must not be shorter than heartbeat_period")
        _positive("max_failed_starts", max_failed_starts, int)
        if provider is not None and not hasattr(provider, "submit"):
            raise TypeError(f"provider must be a Parsl ExecutionProvider, "
                            f"got {type(provider).__name__}")
        if provider is None:
            mpiexec = find_mpiexec(mpiexec)  # a missing one is refused before anything starts
        self.max_failed_starts = max_failed_starts
        self.max_ranks = max_ranks
        self.ranks_per_node = ranks_per_node or max_ranks
        self.provider = provider
        shape = local_shape(max_ranks) if provider is None else block_shape(provider,
                                                                            ranks_per_node)
        self.widest, self.largest_node = shape.widest_task, shape.largest_node_task
        #: worker ranks of a block: the ranks that run tasks
        self.num_workers = shape.worker_ranks
        self.devices = block_devices(self.node_resources, node_workers(
            shape.worker_ranks, shape.nodes, shape.widest_task))
        self._check_spec(self._default)
        session = start_session(
            SessionOptions(address=address, heartbeat_period=heartbeat_period,
                           heartbeat_threshold=heartbeat_threshold,
                           resources=self.node_resources, run_dir=run_dir, encrypted=encrypted,
                           log_level=log_level, trace=trace, shared_memory=use_shm,
                           shared_memory_cap=shm_cap, max_message_size=max_message_size),
            # the client's thread holds the engine, never this executor (see lifetime)
            on_results=self._engine.resolve, on_lost=partial(_on_lost, self._engine),
            on_broken=self._engine.break_down, on_refused=weak(self._on_refused))
        self.encrypted = session.encrypted
        self.run_dir = session.run_dir
        self.client = session.client
        self.client.on_started = self._engine.mark_running
        self.client.on_cancelled = self._engine.dropped
        self._engine.on_cancel = self.client.cancel
        self._engine.settler = self.client.thread_ident
        self._engine.plane = session.plane
        self.pool_config = session.pool_config
        if init_payload:
            self.pool_config = replace(self.pool_config,
                                       initializer=write_initializer(self.run_dir, init_payload))
        self._blocks: LocalBlocks | None = None
        self._provider_blocks: ProviderBlocks | None = None
        if provider is None:
            self._blocks = LocalBlocks(max_ranks, self.pool_config, mpiexec, self.run_dir)
        else:
            self._provider_blocks = ProviderBlocks(provider, self.pool_config,
                                                   shape.tasks_per_node, self.run_dir)
        self._watch = BlockWatch(self._engine, self.client, self._blocks, self._provider_blocks,
                                 self.run_dir, max_failed_starts)
        self._closer = Closer(partial(_close, self._engine, self.client, self._watch,
                                      self._blocks, self._provider_blocks))
        close_when_dropped(self, self._closer)
        blocks = self._blocks or self._provider_blocks
        assert blocks is not None  # a local block or a provider's: one of them was made above
        blocks.start()
        self._watch.start()

    # -- FrontEnd ---------------------------------------------------------------------------------
    def _check_spec(self, spec: Spec) -> None:
        check_fits(spec, self.widest, self.largest_node, self.devices)

    def _send(self, task: TaskRow, future: TaskFuture) -> None:
        self.client.submit(task)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
        if cancel_futures:
            self._engine.cancel_pending()
        self._closer.close(wait)

    def bootup(self, wait: bool = True) -> Executor:
        """Wait until a pool has registered with the interchange (its worker ranks are up and
        ready for tasks), so that timings leave out the start (``mpi4py.futures``' name);
        returns the executor. ``wait=False`` returns at once. RuntimeError after shutdown,
        :class:`~rankpool.errors.BrokenPool` when the executor broke meanwhile."""
        while True:
            if self._shutdown:
                raise RuntimeError("cannot boot up an executor after shutdown")
            if self._broken is not None:
                raise self._broken
            if not wait or self.client.command("pools"):
                return self
            time.sleep(0.05)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self.interrupt()
        else:
            self.shutdown(wait=True)

    def interrupt(self) -> None:
        """Stop at once, as on Ctrl-C (what leaving the ``with`` block with ``KeyboardInterrupt``
        does): say so in one line on stderr, cancel the tasks not started, fail the running
        ones, interrupt the local pools (each rank's running task gets ``KeyboardInterrupt``
        and the pool ends cleanly; one still running 2 s later is terminated, then killed),
        stop the interchange. A second Ctrl-C meanwhile kills them all at once."""
        with self._lock:
            first = not self._shutdown
            self._shutdown = True
        if not first:
            return
        engine = self._engine
        print(f"rankpool: interrupted: cancelling {len(engine.futures)} pending tasks and "
              f"stopping the Executor's pools (running tasks are interrupted; Ctrl-C again "
              f"kills them)", file=sys.stderr, flush=True)
        try:
            engine.cancel_pending(confirm=False)
            engine.fail_remaining(ExecutorShutdown("the executor was interrupted (Ctrl-C) "
                                                   "before the task finished"))
            self._watch.close()
            if self._blocks is not None:
                self._blocks.stop(interrupt=True)
            self._closer.close(wait=True)
        except KeyboardInterrupt:  # the second Ctrl-C: end everything now
            if self._blocks is not None:
                self._blocks.kill()
            self.client.kill()
            raise

    # -- views of the pools ------------------------------------------------------------------------
    def pools(self) -> list[dict[str, Any]]:
        """The connected pools: block, hosts, usable ranks, ``stuck_ranks`` (see the faults page;
        a pool with any is drained), busy ranks, tasks in flight, versions, and ``devices``:
        ``{rank: device id}`` for the ranks that own an accelerator. A pool connects a moment
        after its block starts (seconds, on a batch system): right after the executor is built
        this is usually ``[]``; submitted tasks wait for the first pool."""
        return list(self.client.command("pools"))

    def outstanding(self) -> int:
        """Tasks queued in the interchange or in flight on pools."""
        return int(self.client.command("outstanding"))

    # -- callbacks from the client thread --------------------------------------------------------
    def _on_refused(self, msg: protocol.Refused) -> None:
        """A pool of one of our own blocks refused: no block we start can work, so we are broken.

        A stranger's pool (a block id we never started) refused is only logged."""
        ours = (self._blocks is not None and msg.block_id in self._blocks.started) \
            or (self._provider_blocks is not None and msg.block_id in self._provider_blocks.jobs)
        if not ours:
            log.warning("a pool of unknown block %r was refused: %s", msg.block_id, msg.reason)
            return
        cause = VersionMismatch(msg.what, msg.ours, msg.theirs) \
            if msg.cause is RefusalCause.VERSION_MISMATCH else None
        self._set_broken(f"the pool of block {msg.block_id} was refused: {msg.reason}", cause)


def _on_lost(engine: Engine, msg: protocol.Lost) -> None:
    if not msg.task_ids:
        log.info("block %s left: %s", msg.block_id, msg.reason)
        return
    engine.lost(msg)


def _close(engine: Engine, client: InterchangeClient, watch: BlockWatch,
           blocks: LocalBlocks | None, provider_blocks: ProviderBlocks | None) -> None:
    """Close a run: wait for the pending futures (the blocks are watched meanwhile: one that
    dies is replaced, or the executor breaks), then stop the watch, the interchange (it stops
    its pools), the local blocks and the provider's jobs; fail what is left."""
    while engine.futures and engine.broken is None:
        time.sleep(0.005)
    watch.close()
    client.stop()
    if blocks is not None:
        blocks.stop()
    if provider_blocks is not None:
        provider_blocks.stop()
    engine.fail_remaining(ExecutorShutdown("the executor was shut down before the task "
                                           "finished"))
    if engine.plane is not None:
        engine.plane.close()
