"""CommExecutor under a real mpiexec: every case runs tests/mpi/scripts/comm_cases.py."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(180)]


def test_one_and_multi_rank_tasks(mpirun):
    run = mpirun("comm_cases.py", 5, "basic")
    assert run["pow"] == 1024
    assert run["allreduce"] == {"2": 2, "3": 3, "4": 4}
    assert run["label"] == ["sim", True, 4]
    assert run["all"] == [0, 1, 2, 3]                 # results="all" in rank order
    assert run["first_arg"] == 10                      # None first argument replaced by comm
    assert run["comm_positional_none"] == 6            # comm passed as None by position
    assert run["map"] == list(range(50))
    assert run["one_rank_comm"] == [0, 1]              # a size-1 communicator
    assert run["mixed"] is True                        # widths 1-4 at once, distinct ranks each
    assert run["asyncio"] == 8
    assert run["scoped"] == [True, 6]                  # leaving a view's block waits for it
    assert run["exit"] is True


def test_errors_keep_type_rank_and_traceback(mpirun):
    run = mpirun("comm_cases.py", 5, "errors")
    one = run["one_rank"]
    assert one["type"] == "ValueError" and one["msg"] == "failed on rank 1"
    assert "rank 1 of 2 on" in one["cause"] and "fail_on" in one["cause"]
    assert "run_next" not in one["cause"]              # the pool's own frames are trimmed
    every = run["every_rank"]
    assert every["msg"] == "failed on rank 0"          # the lowest rank's error is raised
    assert len(every["notes"]) == 2 and "rank 1 of 3" in every["notes"][0]
    assert run["single"]["type"] == "ValueError"
    assert run["bad_result"]["type"] == "SerializationError"
    assert "refuses to pickle" in run["bad_result"]["msg"]
    assert run["sys_exit"]["type"] == "TaskExit"       # sys.exit in a task fails only the task
    assert "SystemExit(3)" in run["sys_exit"]["msg"]
    assert run["after"] == 4 and run["after2"] == 4


def test_rank_raising_while_peers_wait_in_collective(mpirun):
    run = mpirun("comm_cases.py", 5, "collective", check=False)
    got = run["collective"]
    assert got["type"] == "KeyError"
    assert 0.9 < got["elapsed"] < 10                   # after the 1 s grace period
    assert "StuckRanksError" in got["notes"][0]
    assert run["after"] == [0, 1]                      # the pool keeps serving on other ranks
    assert len(run["stuck"]) == 1
    # leaving the block with a rank stuck forever aborts the job instead of hanging it
    assert run.proc.returncode != 0
    assert "stuck in tasks that never ended" in run.proc.stderr


def test_walltime(mpirun):
    run = mpirun("comm_cases.py", 5, "walltime")
    assert 0.4 < run["one"]["elapsed"] < 5
    assert "walltime of 0.5 s" in run["one"]["msg"]
    assert 0.4 < run["two"]["elapsed"] < 5
    assert run["fast"] == 0.01
    assert run["after"] == 4


def test_numpy_roundtrip(mpirun):
    run = mpirun("comm_cases.py", 4, "numpy")
    assert run["roundtrip"] == [True, "float64", 2_000_000]
    assert run["small"] == list(range(0, 20, 2))
    assert run["all"] == [[0, 100_000, "int32"], [1, 100_000, "int32"], [2, 100_000, "int32"]]


def test_5000_multi_rank_tasks_do_not_exhaust_communicators(mpirun):
    run = mpirun("comm_cases.py", 5, "many", timeout=170)
    assert run["many"] == 5000


def test_bad_requests_are_refused_at_submit(mpirun):
    run = mpirun("comm_cases.py", 5, "bad")
    assert run["unknown_key"][0] == "ResourceSpecError" and "'gpus'" in run["unknown_key"][1]
    assert "'num_ranks'" in run["bad_value"][1]
    assert "'results'" in run["bad_results"][1]
    assert "99 ranks is wider" in run["too_wide"][1]
    assert run["no_comm"] == "2"  # an MPI application task on 2 ranks, not a refusal
    assert run["not_callable"][0] == "TypeError"
    assert run["unpicklable_arg"][0] == "SerializationError"
    assert run["bad_lend"][0] == "ValueError" and run["bad_lend"][1].startswith("lend:")
    assert run["still_works"] == 7
    assert run["after_shutdown"] == ["RuntimeError", "cannot submit after shutdown"]


def test_idle_pool_of_8_ranks_uses_little_cpu(mpirun):
    run = mpirun("comm_cases.py", 8, "idle")
    assert run["idle_fraction"] < 0.10                 # of one core, all 8 ranks together
