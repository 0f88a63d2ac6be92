"""The one engine behind every front-end: its futures, from submit to their end.

An :class:`Engine` builds each task and registers its :class:`~.task_future.TaskFuture`
(:meth:`Engine.task`), settles futures from result batches (:meth:`Engine.resolve`, via
:mod:`.settling`), fails them (:meth:`Engine.fail`: a lost pool), cancels them, and holds the
broken-state latch (:meth:`Engine.latch`). ``rankpool.Executor`` and
``rankpool.CommExecutor`` reach it through :class:`~rankpool.frontends.base.FrontEnd`;
``ExtremeScaleExecutor`` holds one directly, behind Parsl's interface. Where this sits on
the data path: ``docs/internals.md``.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from typing import Any

from ..errors import BrokenPool, ManagerLost, MessageTooLarge
from ..protocol.batches import TaskRow
from ..protocol.messages import Lost
from ..protocol.result_batches import Result, Values
from ..protocol.wire import MAX_MESSAGE_SIZE, message_size
from ..shm.plane import FrontEndPlane
from ..task.resources import Spec
from ..task.serialize import NO_ARGUMENTS, FunctionPickler, dumps_data
from .cancelling import ask_cancel
from .settling import fail_all, settle, settle_values, unread
from .task_future import TaskFuture

log = logging.getLogger(__name__)


#: bytes a task's record and header take in a message besides its function and arguments
_TASK_RECORD = 4096


class Engine:
    """The futures of one front-end, and the one path every task takes through them.

    ``futures`` maps the id of every task not ended yet to its future; ``ranks`` counts the
    worker ranks those tasks asked for (Parsl's scaling unit); ``plane``, when set, carries
    large arguments through shared memory (see :mod:`rankpool.shm.plane`). A task larger than
    ``max_message_size`` (the run's cap, which every socket enforces) is refused at submit
    with :class:`~rankpool.errors.MessageTooLarge`.

    The path of a 1-rank task takes no lock: a future enters and leaves ``futures`` by single
    dictionary operations (atomic under the GIL), and ``ranks`` is ``len(futures)`` plus the
    extra ranks of the multi-rank tasks pending, which ``lock`` guards with the latch. A
    submit that races the latch looks at it again after its future entered the table, so no
    future is left behind by a :meth:`latch` that emptied the table first.
    """

    def __init__(self) -> None:
        self.futures: dict[int, TaskFuture] = {}
        self._wide = 0  # ranks beyond the first of the pending tasks (guarded by lock)
        self.max_message_size = MAX_MESSAGE_SIZE
        self.lock = threading.Lock()
        self.plane: FrontEndPlane | None = None
        #: the latch: what submit raises once the front-end is broken (None while it is not)
        self.broken: BaseException | None = None
        self._ids = itertools.count(1)
        self._pickler = FunctionPickler()
        self._condition = threading.Condition()  # shared by the futures (see TaskFuture)
        #: asked to drop these tasks wherever they wait, each answer coming back as a result, a
        #: start or a drop (see :mod:`.cancelling`); None: nobody to ask, futures cancel here
        self.on_cancel: Callable[[list[int]], None] | None = None
        #: the thread that settles the futures (it cannot wait for an answer it delivers)
        self.settler: int | None = None

    @property
    def ranks(self) -> int:
        """Worker ranks the pending tasks asked for."""
        return len(self.futures) + self._wide

    def _widen(self, extra: int) -> None:
        """Count ``extra`` ranks beyond the first one of each multi-rank task (negative when
        such tasks ended)."""
        if extra:
            with self.lock:
                self._wide += extra

    def task(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
             spec: Spec, *, wrap: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
             carry_context: bool = True) -> tuple[TaskRow, TaskFuture]:
        """Serialize a task and register its future; the caller sends the task, given as a
        :data:`~rankpool.protocol.batches.TaskRow` (no record object: in a flood, the futures
        are what the caller's garbage collector walks, and little else).

        ``wrap`` replaces the function after its communicator parameter was checked (Parsl's
        multi-rank apps); ``carry_context``: done-callbacks run in the caller's
        ``contextvars`` context (else in an empty one). Raises the latch's error when broken.
        """
        if wrap is not None:
            fn = wrap(fn)
        digest, fn_bytes = self._pickler.dumps(fn)
        if args or kwargs:
            data, buffers = dumps_data((args, kwargs), "the task's arguments")
        else:
            data, buffers = NO_ARGUMENTS, ()
        task_id = next(self._ids)
        context: contextvars.Context | None = None
        if carry_context:
            context = contextvars.copy_context()
            if not context:  # nothing to carry (the common case): keep no object alive for it
                context = None
        future = TaskFuture(task_id, context, self._condition, self, spec.num_ranks,
                            spec.results_all)
        if self.broken is not None:
            raise self.broken
        self.futures[task_id] = future
        if spec.num_ranks != 1:
            self._widen(spec.num_ranks - 1)
        if self.broken is not None:  # latched meanwhile: it may have emptied the table first
            self.forget(task_id, spec.num_ranks)
            raise self.broken
        if buffers and self.plane is not None:
            buffers = self.plane.publish_args(task_id, buffers)
        size = len(fn_bytes) + len(data) + (message_size(buffers) if buffers else 0)
        if size > self.max_message_size - _TASK_RECORD:
            self.forget(task_id, spec.num_ranks)
            raise MessageTooLarge(f"task {task_id} (its function and arguments)", size,
                                  self.max_message_size)
        return (task_id, spec, digest, fn_bytes, data, buffers), future

    def forget(self, task_id: int, num_ranks: int) -> None:
        """Drop a task refused after :meth:`task` registered it (its future never ran)."""
        if self.futures.pop(task_id, None) is not None:
            self._widen(1 - num_ranks)
        if self.plane is not None:
            self.plane.task_ended(task_id)

    def resolve(self, values: Values, results: Sequence[Result]) -> None:
        """Settle the futures of a result batch: ``values`` are results of one value each, in
        columns, ``results`` whole results (as ``split_results`` gives them; the client's
        ``on_results``)."""
        futures = self.futures
        ids, datas = values
        # a flood's values: one pass in C takes their futures, none builds a tuple per task
        plain = list(map(futures.pop, ids, repeat(None)))
        # with no multi-rank task pending (a multi-rank task is counted before it is sent, so
        # before its result can come) none of these is one: no pass over them to count ranks
        wide = sum(f._num_ranks - 1 for f in plain if f is not None) if self._wide else 0
        whole: list[tuple[TaskFuture, Result]] = []
        for result in results:
            future = futures.pop(result.task_id, None)
            if future is not None:
                wide += future._num_ranks - 1
                whole.append((future, result))
            else:
                unread(result)
        self._widen(-wide)
        if self.plane is not None:
            self.plane.tasks_ended([*ids, *(r.task_id for r in results)])
        if plain:
            settle_values(self._condition, plain, ids, datas)
        for future, result in whole:
            settle(future, result)

    def fail(self, task_ids: Iterable[int], error: BaseException) -> None:
        """End these tasks' futures with ``error`` (their pool was lost, their batch refused)."""
        fail_all(self._take(task_ids), error)

    def _take(self, task_ids: Iterable[int]) -> list[TaskFuture]:
        """Take these tasks' futures out of the table (they end now); those still there."""
        task_ids = list(task_ids)
        if self.plane is not None:
            self.plane.tasks_ended(task_ids)
        taken = []
        for task_id in task_ids:
            future = self.futures.pop(task_id, None)
            if future is not None:
                taken.append(future)
        self._widen(-sum(future._num_ranks - 1 for future in taken))
        return taken

    def lost(self, msg: Lost, label: str = "") -> None:
        """A pool left with tasks in flight: fail them with ``ManagerLost`` (Parsl retries
        them elsewhere)."""
        if not msg.task_ids:
            return
        ids = ", ".join(map(str, msg.task_ids[:50])) + (", ..." if len(msg.task_ids) > 50 else "")
        log.error("%spool of block %s on %s lost with %d tasks (%s): %s", label, msg.block_id,
                  ",".join(msg.hosts), len(msg.task_ids), ids, msg.reason)
        self.fail(msg.task_ids, ManagerLost(msg.block_id, msg.hosts, msg.reason))

    def mark_running(self, task_ids: Iterable[int]) -> bool:
        """Futures of tasks that started become RUNNING (``cancel()`` fails from then on); True
        if any did (a future already cancelled stays so)."""
        futures, moved = self.futures, False
        with self._condition:
            for task_id in task_ids:
                future = futures.get(task_id)
                if future is not None and future._state == "PENDING":
                    future._state = "RUNNING"
                    moved = True
            if moved:
                self._condition.notify_all()  # a cancel() waiting for its answer
        return moved

    def break_down(self, message: str, cause: BaseException | None = None) -> None:
        """The latch with a :class:`~rankpool.errors.BrokenPool`: record the cause once, fail
        every pending future, make submit raise."""
        broken = BrokenPool(message, cause)
        pending = self.latch(broken)
        if pending is None:
            return
        log.error("executor broken: %s", message)
        fail_all(pending, broken)

    def latch(self, error: BaseException) -> list[TaskFuture] | None:
        """Break: from now on :meth:`task` raises ``error``. Set once: returns the pending
        futures it took from the table (the caller fails them), or None when already broken."""
        with self.lock:
            if self.broken is not None:
                return None
            self.broken = error
            return self._take_all()

    def cancel_pending(self, *, confirm: bool = True) -> None:
        """Cancel every future not started yet, without waiting: the owners of their tasks are
        asked, and each future ends CANCELLED as its task is dropped, or runs (see
        :mod:`.cancelling`). ``confirm=False`` (an interrupt, which stops every rank too): cancel
        them here at once and have their tasks dropped where they wait."""
        with self.lock:
            pending = list(self.futures.values())
        if confirm and self.on_cancel is not None:
            ask_cancel(self, pending)
            return
        for future in pending:
            if future._set_cancelled():
                self.cancelled(future)

    def cancelled(self, future: TaskFuture) -> None:
        """A future was cancelled here: forget it and have its task dropped (``on_cancel``)."""
        if self.futures.pop(future.task_id, None) is None:
            return
        self._widen(1 - future._num_ranks)
        if self.plane is not None:
            self.plane.tasks_ended([future.task_id])
        if self.on_cancel is not None:
            self.on_cancel([future.task_id])

    def dropped(self, task_ids: Iterable[int]) -> None:
        """These tasks were dropped before they started (the interchange confirms their
        cancel): their futures end CANCELLED."""
        for future in self._take(task_ids):
            future._set_cancelled()

    def fail_remaining(self, error: BaseException) -> None:
        """End every future still pending with ``error`` (the front-end shut down)."""
        with self.lock:
            pending = self._take_all()
        fail_all(pending, error)

    def _take_all(self) -> list[TaskFuture]:
        """Empty the table (the caller holds ``lock``); the futures it held."""
        futures, pending = self.futures, []
        while futures:  # one atomic pop at a time: a submit meanwhile is never lost
            try:
                pending.append(futures.popitem()[1])
            except KeyError:
                break
        self._wide = 0
        return pending
