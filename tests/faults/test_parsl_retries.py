"""Faults under Parsl: with ``retries``, every task of a block that was killed (``kill -9`` of
its job) finally succeeds on a new block; a task whose worker rank died fails with
``WorkerLost`` and its retry runs on the same block's other ranks, or, once the block lost
too many ranks, on a new block; the executor is never left in a bad state.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fault_tasks as t
import parsl
import psutil
import pytest
from helpers import wait_for
from parsl import python_app

from rankpool import ExtremeScaleExecutor, InsufficientRanks, ManagerLost, WorkerLost
from rankpool.frontends.parsl.executor import local_provider

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(120)]

hang_on_block_0 = python_app(t.hang_on_block_0)
exit_on_block_0 = python_app(t.exit_on_block_0)
die_once = python_app(t.die_once)
WIDE = {"num_ranks": 2}


def _retrying_run(tmp_path: Path, ranks_per_node: int,
                  retries: int) -> Iterator[tuple[Any, list[BaseException], str]]:
    """A DataFlowKernel over one block at a time that retries ``retries`` times: its executor,
    the errors its retry handler saw, and a directory for mark files."""
    errors: list[BaseException] = []
    xs = ExtremeScaleExecutor(label="xs", ranks_per_node=ranks_per_node, heartbeat_period=0.5,
                              heartbeat_threshold=3.0,
                              provider=local_provider(init_blocks=1, min_blocks=0, max_blocks=1))
    loaded = parsl.load(parsl.Config(executors=[xs], run_dir=str(tmp_path / "runinfo"),
                                     retries=retries, strategy_period=0.5,
                                     retry_handler=lambda e, record: errors.append(e) or 1.0))
    marks = tmp_path / "marks"
    marks.mkdir()
    try:
        yield loaded.executors["xs"], errors, str(marks)
    finally:
        loaded.cleanup()
        parsl.clear()


@pytest.fixture
def run(tmp_path: Path) -> Iterator[tuple[Any, list[BaseException], str]]:
    """A DataFlowKernel over one block of 2 worker ranks at a time, retrying twice: its
    executor, the errors its retry handler saw, and a directory for mark files."""
    yield from _retrying_run(tmp_path, 2, 2)


def _kill_block(ex: Any, block_id: str) -> None:
    """``kill -9`` the process group of a local block's mpiexec (a child of its job script)."""
    job = psutil.Process(int(ex.blocks_to_job_id[block_id]))
    mpiexec = next(p for p in job.children(recursive=True) if p.name() == "mpiexec")
    os.killpg(os.getpgid(mpiexec.pid), signal.SIGKILL)


def test_killed_block_every_task_succeeds_on_a_new_block(run: Any) -> None:
    ex, errors, marks = run
    futures = [hang_on_block_0(marks, f"one{i}") for i in range(12)]
    futures += [hang_on_block_0(marks, f"two{i}", parsl_resource_specification=WIDE)
                for i in range(4)]
    wait_for(lambda: len(os.listdir(marks)) >= 2, timeout=30)  # both ranks busy on block 0
    _kill_block(ex, "0")
    assert [f.result(timeout=90) for f in futures] == ["1"] * len(futures)
    assert errors and all(isinstance(e, ManagerLost) and e.block_id == "0"
                          and e.reason for e in errors), errors
    wait_for(lambda: ex.status()["0"].terminal, timeout=10)
    assert set(t.runs(marks)) == {f"one{i}" for i in range(12)} | {f"two{i}" for i in range(4)}
    assert not ex.bad_state_is_set
    assert hang_on_block_0(marks, "after").result(timeout=30) == "1"


def test_worker_rank_exit_every_task_succeeds_on_a_new_block(run: Any) -> None:
    """Rank 1 of a 2-rank task exits inside it: the task fails with WorkerLost; its peer,
    left waiting in the allreduce, is ended after the grace period, so the block (2 worker
    ranks) lost both and retires; the retries of every task run on a new block."""
    ex, errors, marks = run
    futures = [exit_on_block_0(marks, f"w{i}", parsl_resource_specification=WIDE)
               for i in range(3)]
    assert [f.result(timeout=90) for f in futures] == ["1"] * 3
    assert [e.exit_code for e in errors if isinstance(e, WorkerLost)] == [9], errors
    # the others: lost with the retiring block, or too wide for its last rank
    assert all(isinstance(e, (WorkerLost, ManagerLost, InsufficientRanks)) for e in errors)
    assert not ex.bad_state_is_set


@pytest.fixture
def wide_run(tmp_path: Path) -> Iterator[tuple[Any, list[BaseException], str]]:
    """As ``run``, with one block of 5 worker ranks and ``retries=1``."""
    yield from _retrying_run(tmp_path, 5, 1)


def test_dead_worker_ranks_are_retried_on_the_same_block(wide_run: Any) -> None:
    """Two apps kill their rank on their first try (SIGSEGV, SIGKILL): each is retried once and
    succeeds on the block's other ranks, as does every other app; the block serves on."""
    ex, errors, marks = wide_run
    dying = [die_once(marks, "segv", "SIGSEGV"), die_once(marks, "kill", "SIGKILL")]
    others = [die_once(marks, f"ok{i}") for i in range(20)]
    pids = [f.result(timeout=60) for f in dying]
    assert all(isinstance(p, int) for p in pids) and [f.result(timeout=60) for f in others]
    assert sorted(type(e).__name__ for e in errors) == ["WorkerLost", "WorkerLost"], errors
    assert sorted(e.signal for e in errors) == [signal.SIGKILL, signal.SIGSEGV]
    assert t.runs(marks) == {"segv": 2, "kill": 2, **{f"ok{i}": 1 for i in range(20)}}
    [pool] = ex.connected_managers()
    assert pool["block_id"] == "0" and len(pool["lost_ranks"]) == 2 and pool["ranks"] == 3
    assert not ex.bad_state_is_set
