"""The thread on root of a ``CommExecutor`` (``rankpool-manager``): the pool's manager (or, over
a communicator of size 1, root running tasks itself) beside the user's code.

A :class:`RootThread` holds what the thread needs and never the executor, so that an executor
nobody references is garbage-collected and shut down (see :mod:`rankpool.frontends.lifetime`).
The executor hands it tasks (:meth:`RootThread.send`) and cancels (:meth:`RootThread.cancel`)
and stops it (:meth:`RootThread.stop`); the thread settles the futures through the engine.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from typing import TypeVar

from mpi4py import MPI

from ..errors import ExecutorShutdown
from ..mpi_pool.backoff import Backoff, BackoffConfig, tighten_timer_slack
from ..mpi_pool.manager import Manager
from ..mpi_pool.solo import Solo
from ..protocol.batches import Task
from ..protocol.result_batches import NO_VALUES
from .engine import Engine

log = logging.getLogger(__name__)
T = TypeVar("T")


class RootThread:
    """Runs ``manager`` (or ``solo``) for ``engine`` in a daemon thread, until stopped.

    ``user_rank``: each pool rank's rank in the user's communicator (for messages);
    ``interrupt_wait``: what an interrupt's log line says root waited.
    """

    def __init__(self, engine: Engine, manager: Manager | None, solo: Solo | None,
                 backoff: BackoffConfig | None, user_rank: Sequence[int],
                 interrupt_wait: float) -> None:
        self.engine = engine
        self.manager = manager
        self.solo = solo
        self.backoff = backoff
        self.user_rank = list(user_rank)
        self.interrupt_wait = interrupt_wait
        self.inbox: deque[Task] = deque()
        self.cancelled: deque[int] = deque()  # tasks whose futures asked to cancel them
        self.wake = threading.Event()
        self.idle = False
        self.stopping = False
        self.cancel_all = False   # stop the ranks dropping what they hold
        self.interrupted = False
        self.give_up = False
        #: the pool communicator to free once the thread ended, when the executor is gone
        self.release: MPI.Intracomm | None = None
        target = self._run if manager is not None else self._run_solo
        self.thread = threading.Thread(target=target, name="rankpool-manager", daemon=True)
        self.thread.start()
        engine.settler = self.thread.ident

    # -- the executor's side ------------------------------------------------------------------
    def send(self, task: Task) -> None:
        self.inbox.append(task)
        if self.idle:
            self.wake.set()

    def cancel(self, task_ids: Sequence[int]) -> None:
        """Have these tasks dropped where they wait (their futures asked to cancel them; the
        manager answers for each: see :mod:`.cancelling`)."""
        self.cancelled.extend(task_ids)
        self.wake.set()

    def stop(self, cancel_all: bool = False) -> None:
        """Finish what is pending (or, with ``cancel_all``, have the ranks drop what they
        hold), then stop the worker ranks and end the thread."""
        if cancel_all:
            self.cancel_all = True
        self.stopping = True
        self.wake.set()

    def close(self) -> None:
        """Stop and wait for the thread; free the pool communicator if nobody else will."""
        self.stop()
        self.thread.join()
        comm, self.release = self.release, None
        if comm is not None and comm != MPI.COMM_NULL:
            comm.Free()

    # -- the thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        tighten_timer_slack()
        manager, engine = self.manager, self.engine
        assert manager is not None
        backoff = Backoff(self.backoff)
        try:
            while True:
                took = self._take_inbox(manager)
                active = manager.progress() or took
                if manager.completed_count:
                    engine.resolve(*manager.take_completed())
                if manager.started:
                    engine.mark_running(manager.take_started(0.0))
                if self.cancelled:
                    manager.manager_cancel(_take_all(self.cancelled))
                if self.stopping and not self.inbox and manager.outstanding == 0:
                    break
                if self.give_up:
                    stuck = manager.abandon()
                    log.error("ranks %s did not stop within %g s of the interrupt",
                              sorted(self.user_rank[r] for r in stuck), self.interrupt_wait)
                    break
                if manager.outstanding == 0 and not self.inbox:
                    self.idle = True
                    if not self.inbox and not self.stopping and not self.cancelled:
                        self.wake.wait()
                    self.idle = False
                    self.wake.clear()
                    backoff.reset()
                elif active:
                    backoff.reset()
                else:
                    backoff.sleep()
        except BaseException as exc:  # pragma: no cover - a bug; never leave futures hanging
            log.exception("CommExecutor manager thread failed")
            engine.break_down(f"the manager thread failed: {exc!r}", exc)
        finally:
            manager.manager_stop(finish=not self.cancel_all)
            engine.fail_remaining(ExecutorShutdown(
                "the CommExecutor was interrupted (Ctrl-C) before the task finished"
                if self.interrupted else
                "the CommExecutor was shut down before the task finished"))

    def _run_solo(self) -> None:
        """A communicator of size 1: run each task here, in turn."""
        solo, engine, inbox = self.solo, self.engine, self.inbox
        assert solo is not None
        try:
            while inbox or not self.stopping:
                if not inbox:
                    self.idle = True
                    if not inbox and not self.stopping:
                        self.wake.wait()
                    self.idle = False
                    self.wake.clear()
                    continue
                task = inbox.popleft()
                if engine.mark_running([task.task_id]):
                    engine.resolve(NO_VALUES, [solo.run(task)])
        except BaseException as exc:  # pragma: no cover - a bug; never leave futures hanging
            log.exception("CommExecutor thread failed")
            engine.break_down(f"the manager thread failed: {exc!r}", exc)
        finally:
            solo.close()
            engine.fail_remaining(ExecutorShutdown(
                "the CommExecutor was shut down before the task finished"))

    def _take_inbox(self, manager: Manager) -> bool:
        inbox = self.inbox
        if not inbox:
            return False
        manager.submit_many(_take_all(inbox))
        return True


def _take_all(queue: deque[T]) -> list[T]:
    return [queue.popleft() for _ in range(len(queue))]
