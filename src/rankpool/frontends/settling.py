"""Settling futures from what came back: a result batch's values and errors, or a failure.

The engine (:mod:`rankpool.frontends.engine`) takes each future out of its table, then calls
these to set its outcome; a future cancelled meanwhile stays cancelled.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, InvalidStateError
from pickle import loads
from typing import TYPE_CHECKING, Any

from ..errors import SerializationError, SharedMemoryError, TaskCancelled
from ..protocol.result_batches import Result
from ..protocol.wire import Buffer
from ..shm.reader import discard
from ..task.serialize import NONE, add_note, exception_text, loads_data, loads_error
from .cancelling import CANCELLED

if TYPE_CHECKING:
    from .task_future import TaskFuture

log = logging.getLogger(__name__)

#: the states of a future that is done
DONE = CANCELLED | {"FINISHED"}
#: Future.__init__ sets exactly these attributes (CPython 3.8-3.13); if a Python adds more,
#: TaskFuture falls back to calling it, and its futures have a Condition each
PLAIN_INIT = set(vars(Future())) == {"_condition", "_state", "_result", "_exception", "_waiters",
                                      "_done_callbacks"}


def settle(future: Future[Any], result: Result) -> None:
    """Resolve ``future`` from a finished task's outcomes (value, list of values, or error)."""
    if future._state in DONE:  # done() without its lock; a late cancel is caught in _set
        unread(result)
        return
    try:
        outcomes = result.outcomes
        if len(outcomes) == 1 and outcomes[0].ok:  # the common case, kept short
            first_value = loads_data(outcomes[0].data, outcomes[0].buffers)
            set_outcome(future, [first_value] if getattr(future, "_results_all", False)
                 else first_value, None)
            return
        if result.ok:
            values = [loads_data(o.data, o.buffers) for o in outcomes]
            outcome: Any = values if getattr(future, "_results_all", False) else values[0]
            set_outcome(future, outcome, None)
            return
        errors = [loads_error(o.data) for o in result.outcomes if not o.ok]
    except Exception as exc:  # a value or error that cannot be rebuilt here
        unread(result)
        error = exc if isinstance(exc, SharedMemoryError) \
            else SerializationError(f"the result of task {result.task_id}", exc)
        log.error("task %d: %s", result.task_id, error)
        set_outcome(future, None, error)
        return
    first = errors[0]
    if len(errors) == 1 and isinstance(first, TaskCancelled) and \
            getattr(future, "_set_cancelled", future.cancel)():
        return  # dropped unstarted (a cancel, an interrupted rank); the waiters were told
    for other in errors[1:]:
        cause = other.__cause__
        where = str(cause).strip().strip('"').strip().splitlines()[0] if cause else "another rank"
        text = exception_text(other)
        add_note(first, f"also failed on {where}: {type(other).__name__}: {text}")
    set_outcome(future, None, first)


def settle_values(condition: threading.Condition, futures: Sequence[TaskFuture | None],
                  ids: Sequence[int], datas: Sequence[Buffer]) -> None:
    """:func:`settle` for results that are one successful outcome without buffers each, in
    columns (``futures`` in the order of ``ids`` and ``datas``, None where a task's future
    has gone), all futures sharing ``condition``: the values are read first, then every future
    is finished under one acquisition of the lock and the waiters are woken once (not once per
    future: a thread waiting for one result would wake for each), then the done-callbacks
    run. No tuple is built per task: in a flood, the futures are what the caller's garbage
    collector has to walk, and little else."""
    ready: list[TaskFuture] = []
    values: list[Any] = []
    if datas and datas[0] == NONE and datas.count(datas[0]) == len(datas):
        # every task returned None (a batch of them shares one bytes object: split_results)
        ready = [f for f in futures if f is not None and f._state not in DONE]
        values = [[None] if f._results_all else None for f in ready]
        datas = ()  # nothing left to read
    for future, task_id, data in zip(futures, ids, datas):
        if future is None or future._state in DONE:
            continue
        try:
            # a task that returned None (many do, for their side effects) needs no unpickling
            value = None if data == NONE else loads(data)
        except Exception as exc:  # a value that cannot be rebuilt here
            error = SerializationError(f"the result of task {task_id}", exc)
            log.error("task %d: %s", task_id, error)
            set_outcome(future, None, error)
            continue
        ready.append(future)
        values.append([value] if future._results_all else value)
    if not PLAIN_INIT:  # the futures have a Condition each
        for future, value in zip(ready, values):
            set_outcome(future, value, None)
        return
    done = []
    with condition:  # what Future.set_result does, for the whole batch
        for future, value in zip(ready, values):
            if future._state in DONE:  # cancelled meanwhile
                continue
            future._result = value  # before the state: result() reads it without the lock
            future._state = "FINISHED"
            for waiter in future._waiter_list or ():  # made only for a future waited on
                waiter.add_result(future)
            if future._done_callbacks:
                done.append(future)
        condition.notify_all()
    for future in done:
        # Future's own helper (the stubs leave its private methods out)
        future._invoke_callbacks()  # type: ignore[attr-defined]


def unread(result: Result) -> None:
    """Free the shared-memory segments of a result nobody will read (see
    :mod:`rankpool.shm.arena`)."""
    for outcome in result.outcomes:
        if outcome.buffers:
            discard(outcome.buffers)


def set_outcome(future: Future[Any], value: Any,
                exc: BaseException | None) -> None:
    """Resolve ``future`` with ``value`` or ``exc``, unless it was cancelled meanwhile."""
    try:
        if exc is None:
            future.set_result(value)
        else:
            future.set_exception(exc)
    except InvalidStateError:
        pass  # cancelled meanwhile


def fail_all(futures: Iterable[Future[Any]], error: BaseException) -> None:
    """End each of ``futures`` with ``error`` (those cancelled meanwhile stay cancelled)."""
    for future in futures:
        set_outcome(future, None, error)
