"""``TaskFuture.cancel()`` where the holder of the task decides (rankpool.frontends.cancelling):
the call asks, waits for the answer, and returns True only for a task dropped unstarted."""

from __future__ import annotations

import threading

import pytest

from rankpool.errors import TaskCancelled
from rankpool.frontends.cancelling import cancel_all
from rankpool.frontends.engine import Engine
from rankpool.frontends.task_future import TaskFuture
from rankpool.protocol.result_batches import NO_VALUES, Outcome, Result
from rankpool.task.resources import parse_spec
from rankpool.task.serialize import dumps_data, dumps_error

pytestmark = pytest.mark.timeout(20)


def engine_with_tasks(n: int) -> tuple[Engine, list[TaskFuture], list[list[int]]]:
    engine = Engine()
    asked: list[list[int]] = []
    engine.on_cancel = asked.append
    futures = [engine.task(pow, (2, i), {}, parse_spec(None))[1] for i in range(n)]
    return engine, futures, asked


def answer_later(action, delay: float = 0.1) -> threading.Timer:
    timer = threading.Timer(delay, action)
    timer.start()
    return timer


def test_true_only_once_the_holder_dropped_the_task():
    engine, (f,), asked = engine_with_tasks(1)
    dropped = Result(f.task_id, [Outcome(0, False, dumps_error(TaskCancelled(f.task_id)))])
    answer_later(lambda: engine.resolve(NO_VALUES, [dropped]))
    assert f.cancel() is True
    assert asked == [[f.task_id]]
    assert f.cancelled() and f._state == "CANCELLED_AND_NOTIFIED" and not engine.futures


def test_interchange_drop_cancels():
    engine, (f,), asked = engine_with_tasks(1)
    answer_later(lambda: engine.dropped([f.task_id]))
    assert f.cancel() is True and f.cancelled()


def test_false_when_the_holder_says_it_started_and_it_runs_on():
    engine, (f,), asked = engine_with_tasks(1)
    answer_later(lambda: engine.mark_running([f.task_id]))
    assert f.cancel() is False
    assert f.running() and not f.cancelled()
    engine.resolve(([f.task_id], [dumps_data(8)[0]]), ())
    assert f.result(timeout=1) == 8


def test_false_when_the_task_ended_first():
    engine, (f,), asked = engine_with_tasks(1)
    answer_later(lambda: engine.resolve(([f.task_id], [dumps_data(1)[0]]), ()))
    assert f.cancel() is False and f.result() == 1


def test_a_future_that_started_or_ended_answers_without_asking():
    engine, (running, done), asked = engine_with_tasks(2)
    engine.mark_running([running.task_id])
    engine.resolve(([done.task_id], [dumps_data(2)[0]]), ())
    assert running.cancel() is False and done.cancel() is False
    assert asked == []


def test_the_settling_thread_cannot_wait_for_its_own_answer():
    """A done-callback cancelling another pending future runs on the thread that would
    deliver the answer: cancel() returns False at once and asks nothing."""
    engine, (first, other), asked = engine_with_tasks(2)
    seen: list[bool] = []

    def settle_here() -> None:
        engine.settler = threading.get_ident()
        engine.resolve(([first.task_id], [dumps_data(0)[0]]), ())

    first.add_done_callback(lambda _: seen.append(other.cancel()))
    t = threading.Thread(target=settle_here)
    t.start()
    t.join(5)
    assert not t.is_alive() and seen == [False]
    assert asked == [] and not other.done()


def test_cancel_all_asks_once_and_waits_for_nothing():
    engine, futures, asked = engine_with_tasks(3)
    engine.mark_running([futures[0].task_id])
    cancel_all(futures)
    cancel_all(futures)
    assert asked == [[futures[1].task_id, futures[2].task_id]]
    assert not any(f.done() for f in futures)


def test_without_anyone_to_ask_the_future_decides():
    engine, (f,), asked = engine_with_tasks(1)
    engine.on_cancel = None
    assert f.cancel() is True and f.cancelled() and not engine.futures
    assert not engine.mark_running([f.task_id])  # the runner then never starts it
