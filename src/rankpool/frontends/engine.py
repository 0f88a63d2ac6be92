"""What every ``concurrent.futures`` front-end shares: futures, requirement views, the
broken-state latch, building tasks and settling results.

A front-end subclasses :class:`FrontEnd` and implements ``_send(task, future)`` (hand the task
to the engine) and ``_stop(wait, cancel_futures)``.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future, InvalidStateError
from typing import Any

from ..errors import BrokenPool, ExecutorShutdown, SerializationError, SharedMemoryError
from ..protocol.batches import Result, Task
from ..protocol.wire import Buffer
from ..shm.plane import FrontEndPlane
from ..shm.reader import discard
from ..task.injection import check_receives_comm
from ..task.resources import Spec, parse_spec
from ..task.serialize import (
    FunctionPickler,
    add_note,
    dumps_data,
    exception_text,
    loads_data,
    loads_error,
)

log = logging.getLogger(__name__)


class TaskFuture(Future):  # type: ignore[type-arg]
    """A ``concurrent.futures.Future`` with the task's id and a writable ``label``.

    Done-callbacks run in the ``contextvars`` context of the ``submit`` call. The futures of one
    executor share one ``Condition`` instead of one each: with tens of thousands of futures in
    flight that halves what creating one costs (the cyclic garbage collector has far fewer
    live objects to walk). ``result`` and ``exception`` therefore wait in a loop until *this*
    future is done.
    """

    def __init__(self, task_id: int, context: contextvars.Context | None = None,
                 condition: threading.Condition | None = None) -> None:
        if condition is None or not _PLAIN_INIT:
            super().__init__()
            if condition is not None:
                self._condition = condition
        else:  # what Future.__init__ does, less the Condition it would make
            self._condition = condition
            self._state = "PENDING"
            self._result = None
            self._exception = None
            self._waiters = []
            self._done_callbacks = []
        self.task_id = task_id
        self.label: str | None = None
        self._context = context
        self._results_all = False

    def _wait(self, timeout: float | None) -> None:
        if self._state in _DONE:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while self._state not in _DONE:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return
                self._condition.wait(remaining)

    def result(self, timeout: float | None = None) -> Any:
        if self._state == "FINISHED" and self._exception is None:
            return self._result  # settled for good (set before the state): no lock needed
        self._wait(timeout)
        return super().result(0)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._wait(timeout)
        return super().exception(0)

    def add_done_callback(self, fn: Callable[[Future], object]) -> None:  # type: ignore[type-arg]
        ctx = self._context
        if ctx is None:  # the submitter's context was empty: run in an empty one
            super().add_done_callback(lambda f: contextvars.Context().run(fn, f))
        else:
            super().add_done_callback(lambda f: ctx.run(fn, f))

    def __repr__(self) -> str:
        label = f" label={self.label!r}" if self.label else ""
        return f"<TaskFuture task_id={self.task_id}{label} state={self._state}>"


_DONE = frozenset({"CANCELLED", "CANCELLED_AND_NOTIFIED", "FINISHED"})

#: Future.__init__ sets exactly these attributes (CPython 3.8-3.13); if a Python adds more,
#: TaskFuture falls back to calling it
_PLAIN_INIT = set(vars(Future())) == {"_condition", "_state", "_result", "_exception", "_waiters",
                                       "_done_callbacks"}


def settle(future: Future, result: Result) -> None:  # type: ignore[type-arg]
    """Resolve ``future`` from a finished task's outcomes (value, list of values, or error)."""
    if future._state in _DONE:  # done() without its lock; a late cancel is caught in _set
        unread(result)
        return
    try:
        outcomes = result.outcomes
        if len(outcomes) == 1 and outcomes[0].ok:  # the common case, kept short
            first_value = loads_data(outcomes[0].data, outcomes[0].buffers)
            _set(future, [first_value] if getattr(future, "_results_all", False)
                 else first_value, None)
            return
        if result.ok:
            values = [loads_data(o.data, o.buffers) for o in outcomes]
            outcome: Any = values if getattr(future, "_results_all", False) else values[0]
            _set(future, outcome, None)
            return
        errors = [loads_error(o.data) for o in result.outcomes if not o.ok]
    except Exception as exc:  # a value or error that cannot be rebuilt here
        unread(result)
        error = exc if isinstance(exc, SharedMemoryError) \
            else SerializationError(f"the result of task {result.task_id}", exc)
        log.error("task %d: %s", result.task_id, error)
        _set(future, None, error)
        return
    first = errors[0]
    for other in errors[1:]:
        cause = other.__cause__
        where = str(cause).strip().strip('"').strip().splitlines()[0] if cause else "another rank"
        text = exception_text(other)
        add_note(first, f"also failed on {where}: {type(other).__name__}: {text}")
    _set(future, None, first)


def settle_value(future: Future, task_id: int, data: Buffer) -> None:  # type: ignore[type-arg]
    """:func:`settle` for a result that is one successful outcome without buffers."""
    if future._state in _DONE:
        return
    try:
        value = loads_data(data)
    except Exception as exc:  # a value that cannot be rebuilt here
        error = SerializationError(f"the result of task {task_id}", exc)
        log.error("task %d: %s", task_id, error)
        _set(future, None, error)
        return
    _set(future, [value] if getattr(future, "_results_all", False) else value, None)


def unread(result: Result) -> None:
    """Free the shared-memory segments of a result nobody will read (see :mod:`rankpool.shm.arena`)."""
    for outcome in result.outcomes:
        if outcome.buffers:
            discard(outcome.buffers)


def _set(future: Future, value: Any, exc: BaseException | None) -> None:  # type: ignore[type-arg]
    try:
        if exc is None:
            future.set_result(value)
        else:
            future.set_exception(exc)
    except InvalidStateError:
        pass  # cancelled meanwhile


class _Submitter(Executor):
    """Shared ``submit``/``requirements`` for front-ends and their views."""

    _default: Spec

    def requirements(self, **spec: Any) -> RequirementsView:
        """A view on the same pool that submits with these resource requirements."""
        return RequirementsView(self._front(), parse_spec(spec))

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskFuture:
        return self._front()._submit(fn, args, kwargs, self._default)

    def _front(self) -> FrontEnd:
        raise NotImplementedError


class FrontEnd(_Submitter):
    """Base of ``CommExecutor`` and ``Executor``."""

    def __init__(self, requirements: Mapping[str, Any] | None = None) -> None:
        self._default = parse_spec(requirements)
        self._ids = itertools.count(1)
        self._pickler = FunctionPickler()
        self._lock = threading.Lock()
        self._condition = threading.Condition()
        self._futures: dict[int, TaskFuture] = {}
        self._shutdown = False
        self._broken: BrokenPool | None = None
        self._plane: FrontEndPlane | None = None   # shared memory for large buffers, if on

    def _front(self) -> FrontEnd:
        return self

    def _check_spec(self, spec: Spec) -> None:
        """Refuse at submit a task no pool of this executor can ever hold (override)."""

    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                spec: Spec) -> TaskFuture:
        if not callable(fn):
            raise TypeError(f"submit needs a callable, got {type(fn).__name__}")
        if self._broken is not None:
            raise self._broken
        if self._shutdown:
            raise RuntimeError("cannot submit after shutdown")
        self._check_spec(spec)
        check_receives_comm(fn, args, spec.num_ranks)
        digest, fn_bytes = self._pickler.dumps(fn)
        data, buffers = dumps_data((args, kwargs), "the task's arguments")
        task_id = next(self._ids)
        context: contextvars.Context | None = contextvars.copy_context()
        if not context:  # nothing to carry (the common case): keep no object alive for it
            context = None
        future = TaskFuture(task_id, context, self._condition)
        future._results_all = spec.results_all
        with self._lock:
            if self._broken is not None:
                raise self._broken
            self._futures[task_id] = future
        if buffers and self._plane is not None:
            buffers = self._plane.publish_args(task_id, buffers)
        self._send(Task(task_id, spec, digest, fn_bytes, data, buffers), future)
        return future

    def _send(self, task: Task, future: TaskFuture) -> None:
        raise NotImplementedError

    def _resolve(self, result: Result) -> None:
        future = self._futures.pop(result.task_id, None)
        if self._plane is not None:
            self._plane.task_ended(result.task_id)
        if future is not None:
            settle(future, result)
        else:
            unread(result)

    def _resolve_values(self, values: list[tuple[int, Buffer]]) -> None:
        """:meth:`_resolve` for results that are one value each (see ``split_results``)."""
        futures, plane = self._futures, self._plane
        for task_id, data in values:
            future = futures.pop(task_id, None)
            if plane is not None:
                plane.task_ended(task_id)
            if future is not None:
                settle_value(future, task_id, data)

    def _fail_future(self, task_id: int, exc: BaseException) -> None:
        if self._plane is not None:
            self._plane.task_ended(task_id)
        future = self._futures.pop(task_id, None)
        if future is not None:
            _set(future, None, exc)

    def _set_broken(self, message: str, cause: BaseException | None = None) -> None:
        """The latch: record the cause once, fail every pending future, make submit raise."""
        with self._lock:
            if self._broken is not None:
                return
            self._broken = BrokenPool(message, cause)
            pending = list(self._futures.values())
            self._futures.clear()
        log.error("executor broken: %s", message)
        for future in pending:
            _set(future, None, self._broken)

    def _cancel_pending(self) -> list[int]:
        """Cancel every future not done yet; their task ids."""
        with self._lock:
            pending = list(self._futures.items())
        cancelled = []
        for task_id, future in pending:
            if future.cancel():
                future.set_running_or_notify_cancel()  # wakes wait() and as_completed()
                cancelled.append(task_id)
                self._futures.pop(task_id, None)
        return cancelled

    def _fail_remaining(self, why: str) -> None:
        with self._lock:
            pending = list(self._futures.values())
            self._futures.clear()
        for future in pending:
            _set(future, None, ExecutorShutdown(why))

    @property
    def pending(self) -> int:
        """Futures not resolved yet."""
        return len(self._futures)

    def __enter__(self) -> Any:
        return self


class RequirementsView(_Submitter):
    """The same pool, submitting with other default requirements.

    Leaving a view's ``with`` block (its ``shutdown``) waits for the futures submitted through
    it; the pool itself keeps running, those futures stay valid, and the view can still submit
    (it is a handle, not a resource): only the executor's own ``shutdown`` stops the pool.
    """

    def __init__(self, front: FrontEnd, spec: Spec) -> None:
        self._parent = front
        self._default = spec
        self._mine: list[TaskFuture] = []
        self._prune_at = 64

    def _front(self) -> FrontEnd:
        return self._parent

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskFuture:
        future = super().submit(fn, *args, **kwargs)
        self._mine.append(future)
        if len(self._mine) >= self._prune_at:
            self._mine = [f for f in self._mine if not f.done()]
            self._prune_at = max(64, 2 * len(self._mine))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            for f in self._mine:
                if f.cancel():
                    f.set_running_or_notify_cancel()
        if wait:
            for f in self._mine:
                try:
                    f.exception()
                except BaseException:  # cancelled
                    pass
