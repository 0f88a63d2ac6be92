"""A worker's fast path for runs of plain tasks (:mod:`rankpool.mpi_pool.plain_runs`) records
each task as the one-task path would, and hands back to the worker's loop where it has work
between tasks. Runs on ``COMM_SELF``, without a pool."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from mpi4py import MPI

from rankpool.mpi_pool.plain_runs import run_plain
from rankpool.mpi_pool.subcomms import MESSAGE_BYTES, expand
from rankpool.mpi_pool.task_setting import TaskSetting
from rankpool.mpi_pool.worker import Worker
from rankpool.task.serialize import FunctionPickler, dumps_data, loads_data, loads_error


def halve(x: int) -> float:
    return x / 2 if x else 1 / x  # x = 0 raises ZeroDivisionError


def ones(n: int) -> Any:
    return np.ones(n, dtype=np.uint8)


@pytest.fixture
def worker() -> Iterator[Worker]:
    w = Worker(MPI.COMM_SELF)
    w.flush_interval = 3600.0  # no report falls due unless a test says so
    yield w
    w.group.Free()


def _queue(worker: Worker, fn: Callable[..., Any], args: list[Any], first_id: int = 1,
           **fields: Any) -> None:
    """Queue a run of tasks of ``fn``, one per argument, as a WORK message brings them."""
    digest, payload = FunctionPickler().dumps(fn)
    datas = [dumps_data(((a,), {}))[0] for a in args]
    ids = list(range(first_id, first_id + len(args)))
    entry = (ids, (0,), False, None, digest, payload, datas, 0, None, 0, ())
    for item in expand(entry):
        worker.queue.append((item._replace(**fields), ()))


def test_a_run_goes_in_one_call_up_to_the_last_task(worker: Worker) -> None:
    _queue(worker, halve, [2, 4, 6, 8, 10])
    assert run_plain(worker) == 4  # the last one waits: a report goes before it
    assert worker.value_ids == [1, 2, 3, 4]
    assert [loads_data(v) for v in worker.values] == [1.0, 2.0, 3.0, 4.0]
    assert worker.value_bytes == sum(map(len, worker.values)) and worker.value_seconds > 0
    assert [e[0].task_id for e in worker.queue] == [5]
    assert run_plain(worker) == 1 and not worker.queue


def test_a_raising_task_is_reported_as_failed_and_the_run_goes_on(worker: Worker) -> None:
    _queue(worker, halve, [2, 0, 4, 6])
    assert run_plain(worker) == 3
    assert worker.value_ids == [1, 3]
    [(task_id, rank, ok, data, nbuf, start, end)] = worker.done
    assert (task_id, rank, ok, nbuf) == (2, 0, False, 0) and start <= end
    exc = loads_error(data)
    assert isinstance(exc, ZeroDivisionError)
    assert "halve" in str(exc.__cause__) and "mpi_pool" not in str(exc.__cause__)


def test_a_result_with_buffers_is_reported_with_them(worker: Worker) -> None:
    _queue(worker, ones, [1 << 17, 3, 4])
    assert run_plain(worker) == 2
    [(task_id, _, ok, data, nbuf, _, _)] = worker.done
    assert (task_id, ok, nbuf) == (1, True, 1)
    assert loads_data(data, worker.done_buffers).sum() == 1 << 17
    assert worker.value_ids == [2]


def test_a_report_falling_due_ends_the_run(worker: Worker) -> None:
    _queue(worker, halve, [2, 4, 6, 8])
    worker.flush_interval = 0.0  # due at once: one task, then the worker's loop reports
    assert run_plain(worker) == 1
    worker.flush_interval = 3600.0
    _queue(worker, halve, [1] * (MESSAGE_BYTES // 10), first_id=10)
    ran = run_plain(worker)
    assert 0 < ran < MESSAGE_BYTES // 10 and worker.value_bytes > MESSAGE_BYTES


@pytest.mark.parametrize("fields", [{"walltime": 5.0}, {"release": (3,)},
                                    {"setting": TaskSetting((("A", "1"),), None, (), None)},
                                    {"ranks": (0, 1)}],
                         ids=["walltime", "release", "setting", "wide"])
def test_a_task_that_is_not_plain_is_left_to_run_next(worker: Worker,
                                                       fields: dict[str, Any]) -> None:
    _queue(worker, halve, [2])
    _queue(worker, halve, [4], first_id=2, **fields)
    _queue(worker, halve, [6, 8], first_id=3)
    assert run_plain(worker) == 1
    assert run_plain(worker) == 0
    assert worker.queue[0][0].task_id == 2


def test_another_function_ends_the_run(worker: Worker) -> None:
    _queue(worker, halve, [2, 4])
    _queue(worker, ones, [1, 2], first_id=3)
    assert run_plain(worker) == 2
    assert run_plain(worker) == 1 and worker.value_ids == [1, 2, 3]


def test_an_unloadable_function_is_left_to_run_next(worker: Worker) -> None:
    _queue(worker, halve, [2, 4])
    worker.queue[0] = (worker.queue[0][0]._replace(fn=b"not a pickle",
                                                    fn_digest=b"other"), ())
    assert run_plain(worker) == 0
    worker.run_next()
    [(task_id, _, ok, _, _, _, _)] = worker.done
    assert (task_id, ok) == (1, False)



def takes_comm(comm: Any = None) -> Any:
    return comm.Get_size(), comm is MPI.COMM_SELF


def test_calls_without_arguments_run_as_the_front_end_sends_them(worker: Worker) -> None:
    """The front-end's one pickle for a call without arguments is read without unpickling:
    each call gets arguments of its own, and ``comm`` still goes in."""
    from rankpool.task.serialize import NO_ARGUMENTS
    digest, payload = FunctionPickler().dumps(takes_comm)
    entry = ([1, 2, 3], (0,), False, None, digest, payload, [NO_ARGUMENTS] * 3, 0, None, 0, ())
    worker.queue.extend((item, ()) for item in expand(entry))
    assert run_plain(worker) == 2 and run_plain(worker) == 1
    assert [loads_data(v) for v in worker.values] == [(1, True)] * 3
