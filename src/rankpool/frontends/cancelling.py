"""Cancelling a task that may already be on its way to a pool: the place that holds it decides.

A task waits in one place at a time: the interchange's queue, rank 0's, or the queue of the
worker rank that prefetched it, and a worker rank starts the next task of its queue without
asking anyone (a flood costs no message per task). So only the place that holds a task can
tell that it never started. ``TaskFuture.cancel()`` therefore asks it (``Engine.on_cancel``: a
``Cancel`` through the interchange, or the ``CommExecutor``'s thread) and waits for the
answer, which comes back the way results come:

* dropped where it waited: ``Cancelled`` from the interchange, or a ``TaskCancelled`` result
  from rank 0 (from its own queue, or from a worker rank that dropped it on a ``CANCEL``): the
  future is CANCELLED_AND_NOTIFIED and ``cancel()`` returns True. The function never runs;
* it had started: ``Started`` (rank 0 knew it: a multi-rank task is started once dispatched,
  a 1-rank task once its rank announced it; or the rank says so in answer to the ``CANCEL``):
  the future is RUNNING and ``cancel()`` returns False;
* it had ended, or its pool was lost: its result or its failure, and False.

A worker rank reads messages between two tasks, so cancelling a task it holds waits for the
task it is running to end. :func:`cancel_all` asks for many at once and waits for none
(``shutdown(cancel_futures=True)``, a ``map`` left early). The thread that delivers the
answers (the client's, or the ``CommExecutor``'s) cannot wait for one: ``cancel()`` called
there, from a done-callback, leaves a pending future alone and returns False.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import Engine
    from .task_future import TaskFuture

#: the states of a cancelled future
CANCELLED = frozenset({"CANCELLED", "CANCELLED_AND_NOTIFIED"})


def confirm_cancel(engine: Engine, future: TaskFuture) -> bool:
    """``future.cancel()`` where ``engine`` asks the task's holder: True once the holder
    dropped the task, False once it started or ended (see the module docstring)."""
    if future._state != "PENDING":
        return future._state in CANCELLED
    if threading.get_ident() == engine.settler:
        return False  # this thread delivers the answer: it cannot wait for it
    ask_cancel(engine, [future])
    condition = future._condition
    with condition:
        while future._state == "PENDING":
            condition.wait(1.0)
    return future._state in CANCELLED


def ask_cancel(engine: Engine, futures: Iterable[TaskFuture]) -> None:
    """Ask, once per future, for the tasks of these pending futures to be dropped."""
    ids = []
    with engine.lock:
        for future in futures:
            if future._state == "PENDING" and not future._cancel_asked:
                future._cancel_asked = True
                ids.append(future.task_id)
    if ids and engine.on_cancel is not None:
        engine.on_cancel(ids)


def cancel_all(futures: Iterable[Future[Any]]) -> None:
    """Cancel these futures without waiting for the answers: each ends CANCELLED if its task
    is dropped before it starts, and runs otherwise (other futures: ``cancel()``)."""
    from .task_future import TaskFuture
    asked: dict[int, tuple[Engine, list[TaskFuture]]] = {}
    for future in futures:
        engine = future._engine if isinstance(future, TaskFuture) else None
        if isinstance(future, TaskFuture) and engine is not None and engine.on_cancel is not None:
            asked.setdefault(id(engine), (engine, []))[1].append(future)
        else:
            future.cancel()
    for engine, batch in asked.values():
        ask_cancel(engine, batch)
