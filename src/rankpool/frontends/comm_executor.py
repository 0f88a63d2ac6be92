"""``CommExecutor``: the pool inside a program that already runs under ``mpiexec``.

Every rank of ``comm`` constructs it; rank ``root`` gets an executor from ``with ... as ex``,
the others serve tasks inside ``__enter__`` until root leaves the block, then get ``None``::

    with CommExecutor(MPI.COMM_WORLD, root=0) as ex:
        if ex is not None:
            print(ex.submit(pow, 2, 10).result())

On root, a thread (``rankpool-manager``) runs the pool's manager on the pool's own
communicator (a reordered copy of ``comm``, so its messages never mix with the user's), while
the user's code keeps running. No ZeroMQ, no interchange.

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
import threading
import traceback
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mpi4py import MPI

from ..errors import ExecutorShutdown, ResourceSpecError
from ..exit_codes import ExitCode
from ..mpi_pool.backoff import Backoff, BackoffConfig, tighten_timer_slack
from ..mpi_pool.initializer import initialize
from ..mpi_pool.interrupts import Interrupts
from ..mpi_pool.manager import Manager, abort_for_stuck
from ..mpi_pool.mpich_files import release
from ..mpi_pool.placement.scheduler import DEFAULT_DEPTH, DEFAULT_LEND, check_lend
from ..mpi_pool.solo import Solo
from ..mpi_pool.subcomms import discover_topology
from ..mpi_pool.worker import Worker
from ..protocol.batches import Task
from ..task.initializer import dump_initializer
from ..task.node_resources import apply_binding, device_ranks, node_resources
from ..task.resources import Spec, check_fits
from .base import FrontEnd
from .engine import TaskFuture

log = logging.getLogger(__name__)

#: seconds root waits, after Ctrl-C, for the interrupted worker ranks to report before it
#: declares the ranks still in tasks stuck (and, with ``on_stuck="abort"``, aborts the job)
INTERRUPT_WAIT = 2.0


class CommExecutor(FrontEnd):
    """A ``concurrent.futures.Executor`` over the ranks of ``comm``; rank ``root`` submits.

    ``depth``: most 1-rank tasks queued on one worker rank (prefetch); ``lend``: times each
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
        # root becomes rank 0 of the pool's communicator; everyone else keeps their order
        self.pool_comm = comm.Split(0, 0 if self.is_root else comm.Get_rank() + 1)
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
        self._inbox: deque[Task] = deque()
        self._wake = threading.Event()
        self._idle = False
        self._stopping = False
        self._cancel_all = False
        self._interrupted = False
        self._give_up = False
        self._cancelled: deque[int] = deque()  # futures cancelled: drop their tasks
        self._entered = False
        self._thread: threading.Thread | None = None
        self._manager: Manager | None = None
        self._solo: Solo | None = None
        if self.is_root and self.pool_comm.Get_size() == 1:
            self._solo = Solo()
            self._thread = threading.Thread(target=self._run_solo, name="rankpool-manager",
                                            daemon=True)
            self._thread.start()
        if init_error:
            self._set_broken(init_error)
        if self._solo is None and self.is_root:
            self._engine.on_cancel = self._cancelled.append  # dropped by the manager thread
            self._manager = Manager(self.pool_comm, self.topology, depth=depth, lend=lend,
                                    grace=grace,
                                    device_ranks=device_ranks(self.topology.nodes, resources))
            self._thread = threading.Thread(target=self._run, name="rankpool-manager", daemon=True)
            self._thread.start()

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
            stuck = self._manager.stuck if self._manager is not None else {}
            if stuck and self.on_stuck == "abort":
                if exc is not None:  # what left the user's code, before the abort ends all
                    traceback.print_exception(exc_type, exc, tb, file=sys.stderr)
                    sys.stderr.flush()
                abort_for_stuck(self.pool_comm, stuck, ExitCode.COMM_STUCK, self._user_rank)
        self.pool_comm.Free()

    def _interrupt(self) -> None:
        """Ctrl-C on root: say what stops, cancel what no rank holds yet, stop the ranks and wait
        a bounded time for the tasks they were interrupted in; ranks still in one are stuck."""
        assert self._thread is not None
        print(f"rankpool: interrupted: cancelling queued tasks and stopping the CommExecutor "
              f"({self.num_workers} worker ranks, {self.pending} tasks pending; running tasks "
              f"are interrupted; Ctrl-C again aborts the job)", file=sys.stderr, flush=True)
        with self._lock:
            self._shutdown = True
        self._interrupted = True
        # not started: cancelled, here or on ranks
        self._cancelled.extend(self._engine.cancel_pending())
        self._cancel_all = True
        self._stopping = True
        self._wake.set()
        if self._manager is None:  # size 1: root's own thread runs the task; it is abandoned
            return
        self._thread.join(INTERRUPT_WAIT)
        if self._thread.is_alive():
            self._give_up = True  # the thread marks the ranks still in tasks stuck, then ends
            self._thread.join()

    def bootup(self, wait: bool = True) -> CommExecutor:
        """Return once the pool is up (as in ``mpi4py.futures``); a ``CommExecutor`` is up as soon
        as it is constructed on every rank. RuntimeError after shutdown."""
        if self._shutdown:
            raise RuntimeError("cannot boot up a CommExecutor after shutdown")
        return self

    @property
    def stuck_ranks(self) -> list[int]:
        """Ranks of ``comm`` that never came back from a task (see ``grace`` and ``walltime``)."""
        if self._manager is None:
            return []
        return sorted(self._user_rank[r] for r in self._manager.stuck)

    # -- FrontEnd -----------------------------------------------------------------------------
    def _check_spec(self, spec: Spec) -> None:
        if not self.is_root:
            raise RuntimeError("only rank root of a CommExecutor submits tasks")
        if self._solo is not None:
            if spec.num_ranks > 1 or spec.gpus_per_rank:
                key = "num_ranks" if spec.num_ranks > 1 else "gpus_per_rank"
                raise ResourceSpecError(key, "this CommExecutor's communicator has one rank: its "
                                        "root runs 1-rank tasks without accelerators only, and "
                                        f"this task asks for {spec.num_ranks} ranks"
                                        f"{' with accelerators' if spec.gpus_per_rank else ''}")
            return
        assert self._manager is not None
        check_fits(spec, self._manager.widest, self._manager.largest_node,
                   self._manager.devices)

    def _send(self, task: Task, future: TaskFuture) -> None:
        self._inbox.append(task)
        if self._idle:
            self._wake.set()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if not self.is_root:
            return
        with self._lock:
            self._shutdown = True
        if cancel_futures:
            self._engine.cancel_pending()
            self._cancel_all = True
        self._stopping = True
        self._wake.set()
        if wait and self._thread is not None:
            self._thread.join()

    # -- the manager thread -------------------------------------------------------------------
    def _run(self) -> None:
        tighten_timer_slack()
        manager = self._manager
        assert manager is not None
        backoff = Backoff(self._backoff)
        try:
            while True:
                took = self._take_inbox(manager)
                active = manager.progress() or took
                if manager.completed:
                    done, manager.completed = manager.completed, []
                    self._engine.resolve((), done)
                if manager.started:
                    self._engine.mark_running(manager.take_started(0.0))
                if self._cancelled:
                    manager.manager_cancel(_take_all(self._cancelled))
                if self._stopping and not self._inbox and manager.outstanding == 0:
                    break
                if self._give_up:
                    stuck = manager.abandon()
                    log.error("ranks %s did not stop within %g s of the interrupt",
                              sorted(self._user_rank[r] for r in stuck), INTERRUPT_WAIT)
                    break
                if manager.outstanding == 0 and not self._inbox:
                    self._idle = True
                    if not self._inbox and not self._stopping:
                        self._wake.wait()
                    self._idle = False
                    self._wake.clear()
                    backoff.reset()
                elif active:
                    backoff.reset()
                else:
                    backoff.sleep()
        except BaseException as exc:  # pragma: no cover - a bug; never leave futures hanging
            log.exception("CommExecutor manager thread failed")
            self._set_broken(f"the manager thread failed: {exc!r}", exc)
        finally:
            manager.manager_stop(finish=not self._cancel_all)
            self._engine.fail_remaining(ExecutorShutdown(
                "the CommExecutor was interrupted (Ctrl-C) before the task finished"
                if self._interrupted else
                "the CommExecutor was shut down before the task finished"))

    def _run_solo(self) -> None:
        """The manager thread of a communicator of size 1: run each task here, in turn."""
        solo = self._solo
        assert solo is not None
        inbox = self._inbox
        try:
            while inbox or not self._stopping:
                if not inbox:
                    self._idle = True
                    if not inbox and not self._stopping:
                        self._wake.wait()
                    self._idle = False
                    self._wake.clear()
                    continue
                task = inbox.popleft()
                if self._engine.mark_running([task.task_id]):
                    self._engine.resolve((), [solo.run(task)])
        except BaseException as exc:  # pragma: no cover - a bug; never leave futures hanging
            log.exception("CommExecutor thread failed")
            self._set_broken(f"the manager thread failed: {exc!r}", exc)
        finally:
            solo.close()
            self._engine.fail_remaining(ExecutorShutdown(
                "the CommExecutor was shut down before the task finished"))

    def _take_inbox(self, manager: Manager) -> bool:
        inbox = self._inbox
        if not inbox:
            return False
        submit = manager.submit
        while inbox:
            submit(inbox.popleft())
        return True


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


def _take_all(queue: deque[int]) -> list[int]:
    return [queue.popleft() for _ in range(len(queue))]
