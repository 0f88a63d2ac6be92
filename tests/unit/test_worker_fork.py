"""A worker rank notices a fork made inside a task without a ``getpid`` per task, and a worker
made in a forked process (a rank is its keeper's child) still runs its tasks."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

import rankpool.mpi_pool.user_code as user_code
from rankpool.mpi_pool.solo import Solo
from rankpool.protocol.batches import Task
from rankpool.task.resources import Spec
from rankpool.task.serialize import FunctionPickler, dumps_data, loads_data


def _left(code: int) -> NoReturn:
    raise AssertionError(f"the worker left (os._exit({code}))")


def _task(fn: object, *args: object) -> Task:
    digest, fn_bytes = FunctionPickler().dumps(fn)
    data, buffers = dumps_data((args, {}))
    return Task(1, Spec(), digest, fn_bytes, data, buffers)


@pytest.mark.parametrize("forked_before", [False, True])
def test_a_worker_runs_its_tasks_after_a_fork_of_its_own_process(
        monkeypatch: pytest.MonkeyPatch, forked_before: bool) -> None:
    monkeypatch.setattr(user_code, "_forked", forked_before)
    monkeypatch.setattr(os, "_exit", _left)
    solo = Solo()
    try:
        result = solo.run(_task(divmod, 7, 2))
    finally:
        solo.close()
    outcome = result.outcomes[0]
    assert outcome.ok and loads_data(outcome.data) == (3, 1)


def test_a_fork_is_noticed_in_this_process() -> None:
    pid = os.fork()
    if pid == 0:  # the child: the flag is set
        os._exit(0 if user_code._forked else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
