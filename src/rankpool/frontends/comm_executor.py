"""``CommExecutor``: the pool inside a program that already runs under ``mpiexec``.

Every rank of ``comm`` constructs it; rank ``root`` gets an executor from ``with ... as ex``,
the others serve tasks inside ``__enter__`` until root leaves the block, then get ``None``::

    with CommExecutor(MPI.COMM_WORLD, root=0) as ex:
        if ex is not None:
            print(ex.submit(pow, 2, 10).result())

On root, a thread (``rankpool-manager``) runs the pool's manager on the pool's own
communicator (a reordered copy of ``comm``, so its messages never mix with the user's), while
the user's code keeps running (:mod:`.comm_root`). No ZeroMQ, no interchange. A root executor
nobody references any more shuts down, and one still open when the program ends waits for its
pending futures and stops the worker ranks before ``MPI_Finalize`` (see :mod:`.lifetime`).

Ctrl-C: ``mpiexec`` sends SIGINT to every rank. Root's ``KeyboardInterrupt`` leaves the ``with``
block, which prints one line, cancels the tasks not yet handed to a rank, stops the worker ranks
and waits up to ``INTERRUPT_WAIT`` seconds for them; each worker rank interrupts the task it runs
(see :mod:`rankpool.mpi_pool.interrupts`) and, once stopped, raises ``KeyboardInterrupt`` from
``__enter__`` too, so that every rank leaves the block the same way and reaches ``MPI_Finalize``.
"""

from __future__ import annotations

import logging
import signal
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, cast

from mpi4py import MPI

from ..errors import ResourceSpecError
from ..exit_codes import ExitCode
from ..mpi_pool.backoff import BackoffConfig
from ..mpi_pool.initializer import initialize
from ..mpi_pool.interrupts import Interrupts
from ..mpi_pool.manager import Manager
from ..mpi_pool.mpich_files import release
from ..mpi_pool.placement.scheduler import DEFAULT_DEPTH, DEFAULT_LEND, check_lend
from ..mpi_pool.rank_losses import abort_for_stuck
from ..mpi_pool.solo import Solo
from ..mpi_pool.subcomms import discover_topology
from ..mpi_pool.worker import Worker
from ..protocol.batches import Task, TaskRow
from ..task.initializer import dump_initializer
from ..task.node_resources import apply_binding, device_ranks, node_resources
from ..task.resources import Spec, check_fits
from .base import FrontEnd
from .comm_root import RootThread
from .lifetime import Closer, close_when_dropped
from .task_future import TaskFuture

log = logging.getLogger(__name__)

#: seconds root waits, after Ctrl-C, for the interrupted worker ranks to report before it
#: declares the ranks still in tasks stuck (and, with ``on_stuck="abort"``, aborts the job)
INTERRUPT_WAIT = 2.0


class CommExecutor(FrontEnd):
    """A ``concurrent.futures.Executor`` over the ranks of ``comm``; rank ``root`` submits.

    ``depth``: most 1-rank tasks queued on one worker rank (prefetch; 64 unless the recent
    tasks ran under 40 µs, see :mod:`rankpool.mpi_pool.prefetch`); ``lend``: times each
    rank reserved for a blocked wide task may run another task while it waits (0: a strict
    reservation; see :mod:`rankpool.mpi_pool.placement.scheduler`); ``grace``: seconds the
    other ranks of a task get after one rank failed before they are declared stuck;
    ``backoff``: idle polling of the worker ranks; ``on_stuck``: what leaving the ``with`` block
    does when ranks are stuck in a task forever (see :attr:`stuck_ranks`): ``"abort"`` the MPI
    job with an error message (they could never reach ``MPI_Finalize``, so the job would hang
    until its walltime) or ``"leave"`` them; ``accelerators``, ``accelerator_env``,
    ``ranks_per_accelerator``, ``cpu_affinity``: the binding of the worker ranks to devices
    and CPUs, applied here on every rank before any task runs (code that ran before this, on
    any rank, may already have initialised a device library with the old variables);
    ``initializer``, ``initargs``: ``initializer(*initargs)`` runs once on every worker rank,
    here, before any task (on root itself over a communicator of size 1); if it raises on any
    rank the executor is broken: ``submit`` raises :class:`~rankpool.errors.BrokenPool`
    naming the rank and the error. ``num_workers``: the ranks that run tasks.
    """

    def __init__(self, comm: MPI.Intracomm | None = None, root: int = 0, *,
                 requirements: Mapping[str, Any] | None = None, depth: int = DEFAULT_DEPTH,
                 lend: int = DEFAULT_LEND, grace: float = 5.0, backoff: BackoffConfig | None = None,
                 on_stuck: str = "abort",
                 accelerators: int | str | Sequence[str] | None = None,
                 accelerator_env: str | None = None, ranks_per_accelerator: int = 1,
                 cpu_affinity: str | Sequence[Any] = "none",
                 initializer: Callable[..., Any] | None = None,
                 initargs: Sequence[Any] = ()) -> None:
        super().__init__(requirements)
        init_payload = dump_initializer(initializer, initargs)
        resources = node_resources(accelerators, accelerator_env, ranks_per_accelerator,
                                   cpu_affinity)
        comm = _intracomm(MPI.COMM_WORLD if comm is None else comm)
        if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < comm.Get_size():
            raise ValueError(f"root must be a rank of comm (0..{comm.Get_size() - 1}), "
                             f"got {root!r}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive integer, got {depth!r}")
        check_lend(lend, "lend")
        if not grace > 0:
            raise ValueError(f"grace must be a positive number of seconds, got {grace!r}")
        if on_stuck not in ("abort", "leave"):
            raise ValueError(f"on_stuck must be 'abort' or 'leave', got {on_stuck!r}")
        self.on_stuck = on_stuck
        self.root = root
        self.is_root = comm.Get_rank() == root
        # root becomes rank 0 of the pool's communicator; everyone else keeps their order (an
        # intracommunicator's Split makes one, which mpi4py's stubs type as a plain Comm)
        self.pool_comm = cast(MPI.Intracomm,
                              comm.Split(0, 0 if self.is_root else comm.Get_rank() + 1))
        self.topology = discover_topology(self.pool_comm)
        self.device = apply_binding(self.pool_comm.Get_rank(), self.topology.nodes, resources)
        self.pool_comm_rank = self.pool_comm.Get_rank()
        self._user_rank = self.pool_comm.allgather(comm.Get_rank())
        release(self.pool_comm)  # MPICH's file in /dev/shm: nothing left however the job ends
        size = self.pool_comm.Get_size()
        #: worker ranks: the ranks of ``comm`` but root (root itself on a communicator of size 1)
        self.num_workers = max(1, size - 1)
        init_error = initialize(self.pool_comm, init_payload,
                                range(1, size) if size > 1 else [0])
        self._backoff = backoff
        self._entered = False
        self._root: RootThread | None = None
        self._closer: Closer | None = None
        if init_error:
            self._set_broken(init_error)
        if self.is_root:
            manager = solo = None
            if size == 1:
                solo = Solo()
            else:
                manager = Manager(self.pool_comm, self.topology, depth=depth, lend=lend,
                                  grace=grace,
                                  device_ranks=device_ranks(self.topology.nodes, resources))
            # the thread holds the root's state, never this executor (see lifetime)
            thread = self._root = RootThread(self._engine, manager, solo, backoff,
                                             self._user_rank, INTERRUPT_WAIT)
            if manager is not None:
                self._engine.on_cancel = thread.cancel
            self._closer = Closer(thread.close)
            close_when_dropped(self, self._closer, before=partial(_owner_gone, thread,
                                                                  self.pool_comm))

    # -- context manager ---------------------------------------------------------------------
    def __enter__(self) -> CommExecutor | None:  # type: ignore[override]
        if self._entered:
            raise RuntimeError("a CommExecutor's with block cannot be entered twice")
        self._entered = True
        if self.is_root:
            return self
        interrupts = Interrupts([signal.SIGINT], self.pool_comm)
        Worker(self.pool_comm, self._backoff, interrupts=interrupts).serve()
        if interrupts.interrupted:  # Ctrl-C: root leaves its block with KeyboardInterrupt too
            self.pool_comm.Free()
            raise KeyboardInterrupt(f"worker rank {self.pool_comm_rank} of the CommExecutor "
                                    f"was interrupted")
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> None:
        if self.pool_comm == MPI.COMM_NULL:
            return  # left already
        if self.is_root:
            if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
                self._interrupt()
            else:
                self.shutdown(wait=True)
            stuck = self._stuck
            if stuck and self.on_stuck == "abort":
                if exc is not None:  # what left the user's code, before the abort ends all
                    traceback.print_exception(exc_type, exc, tb, file=sys.stderr)
                    sys.stderr.flush()
                abort_for_stuck(self.pool_comm, stuck, ExitCode.COMM_STUCK, self._user_rank)
        self.pool_comm.Free()

    def _interrupt(self) -> None:
        """Ctrl-C on root: say what stops, cancel what no rank holds yet, stop the ranks and wait
        a bounded time for the tasks they were interrupted in; ranks still in one are stuck."""
        root = self._root
        assert root is not None
        print(f"rankpool: interrupted: cancelling queued tasks and stopping the CommExecutor "
              f"({self.num_workers} worker ranks, {self.pending} tasks pending; running tasks "
              f"are interrupted; Ctrl-C again aborts the job)", file=sys.stderr, flush=True)
        with self._lock:
            self._shutdown = True
        root.interrupted = True
        self._engine.cancel_pending(confirm=False)  # not started: cancelled, here or on ranks
        root.stop(cancel_all=True)
        if root.manager is None:  # size 1: root's own thread runs the task; it is abandoned
            return
        root.thread.join(INTERRUPT_WAIT)
        if root.thread.is_alive():
            root.give_up = True  # the thread marks the ranks still in tasks stuck, then ends
            root.thread.join()

    def bootup(self, wait: bool = True) -> CommExecutor:
        """Return once the pool is up (as in ``mpi4py.futures``); a ``CommExecutor`` is up as soon
        as it is constructed on every rank. RuntimeError after shutdown."""
        if self._shutdown:
            raise RuntimeError("cannot boot up a CommExecutor after shutdown")
        return self

    @property
    def _stuck(self) -> dict[int, int]:
        manager = self._root.manager if self._root is not None else None
        return manager.stuck if manager is not None else {}

    @property
    def stuck_ranks(self) -> list[int]:
        """Ranks of ``comm`` that never came back from a task (see ``grace`` and ``walltime``)."""
        return sorted(self._user_rank[r] for r in self._stuck)

    # -- FrontEnd -----------------------------------------------------------------------------
    def _check_spec(self, spec: Spec) -> None:
        if not self.is_root:
            raise RuntimeError("only rank root of a CommExecutor submits tasks")
        assert self._root is not None
        manager = self._root.manager
        if manager is None:
            if spec.num_ranks > 1 or spec.gpus_per_rank:
                key = "num_ranks" if spec.num_ranks > 1 else "gpus_per_rank"
                raise ResourceSpecError(key, "this CommExecutor's communicator has one rank: its "
                                        "root runs 1-rank tasks without accelerators only, and "
                                        f"this task asks for {spec.num_ranks} ranks"
                                        f"{' with accelerators' if spec.gpus_per_rank else ''}")
            return
        check_fits(spec, manager.widest, manager.largest_node, manager.devices)

    def _send(self, task: TaskRow, future: TaskFuture) -> None:
        assert self._root is not None
        self._root.send(Task(*task))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if not self.is_root:
            return
        assert self._root is not None and self._closer is not None
        with self._lock:
            self._shutdown = True
        if cancel_futures:
            self._engine.cancel_pending()
            self._root.stop(cancel_all=True)
        self._closer.close(wait)


def _owner_gone(root: RootThread, pool_comm: MPI.Intracomm) -> None:
    """A root executor nobody references: its thread frees the pool communicator at its end."""
    root.release = pool_comm


def _intracomm(comm: Any) -> MPI.Intracomm:
    """``comm`` as an intracommunicator, or an error that says what it is instead."""
    if not isinstance(comm, MPI.Comm):
        raise TypeError(f"comm must be an MPI communicator, got {type(comm).__name__}")
    if comm == MPI.COMM_NULL:
        raise ValueError("comm is MPI.COMM_NULL; CommExecutor needs an intracommunicator")
    if comm.Is_inter():
        raise ValueError("comm is an intercommunicator; CommExecutor needs an intracommunicator "
                         "(Intercomm.Merge() makes one of its two groups)")
    return comm if isinstance(comm, MPI.Intracomm) else MPI.Intracomm(comm)

