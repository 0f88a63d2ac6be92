"""CommExecutor under a real ``mpiexec``: tasks of one and of several ranks, errors, a rank that
raises while its peers wait in a collective, walltimes, NumPy, thousands of subcommunicators,
bad requests, and the CPU an idle pool uses.

Each case runs on rank 0 inside ``with CommExecutor(MPI.COMM_WORLD, root=0, grace=1.0)`` (the
other ranks serve) and records what it saw; the test beside it runs the case with
:func:`mpi_cases.run_case` and asserts on the records (see ``tests/mpi_cases.py``). MPI is
imported inside the functions, so that importing this module under pytest starts none.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mpi_cases import record, run_case, serve

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(180)]

HERE = Path(__file__).resolve()


# -- task functions (run on the worker ranks) ----------------------------------------------------
def allreduce(n: int, comm: Any = None) -> int:
    return comm.allreduce(n)


def where(comm: Any = None) -> list[int]:
    from mpi4py import MPI
    return [comm.Get_rank(), comm.Get_size(), MPI.COMM_WORLD.Get_rank()]


def rank_of(comm: Any = None) -> int:
    return comm.Get_rank()


def first_arg(comm: Any, x: int) -> int:
    return comm.Get_size() * x


def fail_on(ranks: list[int], comm: Any = None) -> int:
    if comm.Get_rank() in ranks:
        raise ValueError(f"failed on rank {comm.Get_rank()}")
    comm.Barrier() if not ranks else None
    return comm.Get_rank()


def raise_while_peers_wait(comm: Any = None) -> None:
    if comm.Get_rank() == 1:
        raise KeyError("rank 1 gives up")
    comm.Barrier()  # rank 0 waits here forever


def nap(seconds: float, comm: Any = None) -> float:
    time.sleep(seconds)
    return seconds


def echo(x: Any) -> Any:
    return x


def variable(name: str) -> str | None:
    return os.environ.get(name)


def double_array(a: Any) -> Any:
    return a * 2


def array_per_rank(n: int, comm: Any = None) -> Any:
    return np.full(n, comm.Get_rank(), dtype=np.int32)


class Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("refuses to pickle")


def bad_result() -> Unpicklable:
    return Unpicklable()


# -- cases and their tests -------------------------------------------------------------------------
def case_basic(ex: Any) -> None:
    record("pow", ex.submit(pow, 2, 10).result())
    futs = {w: ex.requirements(num_ranks=w).submit(allreduce, 1) for w in (2, 3, 4)}
    record("allreduce", {w: f.result() for w, f in futs.items()})
    f = ex.requirements(num_ranks=4).submit(allreduce, 1)
    f.label = "sim"
    record("label", [f.label, isinstance(f.task_id, int), f.result()])
    record("all", ex.requirements(num_ranks=4, results="all").submit(rank_of).result())
    record("first_arg", ex.requirements(num_ranks=2).submit(first_arg, None, 5).result())
    record("comm_positional_none",
           ex.requirements(num_ranks=3).submit(allreduce, 2, None).result())
    record("map", list(ex.map(echo, range(50))))
    record("one_rank_comm", ex.submit(where).result()[:2])
    # mixed widths at once, then every result is checked
    mixed = [(w, ex.requirements(num_ranks=w, results="all").submit(where)) for w in
             [1, 2, 3, 4, 1, 1, 2, 2, 3, 1] * 20]
    ok = all(len(f.result()) == w and [r[0] for r in f.result()] == list(range(w))
             and len({r[2] for r in f.result()}) == w for w, f in mixed)
    record("mixed", ok)
    view = ex.requirements(num_ranks=2)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(view, allreduce, 4)
    record("asyncio", asyncio.run(main()))
    with ex.requirements(num_ranks=2) as scoped:
        g = scoped.submit(allreduce, 3)
    record("scoped", [g.done(), g.result()])


def test_one_and_multi_rank_tasks(tmp_path: Path) -> None:
    run = run_case(HERE, "basic", 5, tmp_path)
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


def caught(fut: Any) -> dict[str, Any] | None:
    """The exception a future ends with, as type, message, cause and notes."""
    try:
        fut.result()
        return None
    except BaseException as exc:
        return {"type": type(exc).__name__, "msg": str(exc), "cause": str(exc.__cause__),
                "notes": getattr(exc, "__notes__", [])}


def case_errors(ex: Any) -> None:
    record("one_rank", caught(ex.requirements(num_ranks=2).submit(fail_on, [1])))
    record("every_rank", caught(ex.requirements(num_ranks=3).submit(fail_on, [0, 1, 2])))
    record("single", caught(ex.submit(fail_on, [0])))
    record("after", ex.requirements(num_ranks=4).submit(allreduce, 1).result())
    record("bad_result", caught(ex.submit(bad_result)))
    record("sys_exit", caught(ex.submit(sys.exit, 3)))
    record("after2", ex.requirements(num_ranks=4).submit(allreduce, 1).result())


def test_errors_keep_type_rank_and_traceback(tmp_path: Path) -> None:
    run = run_case(HERE, "errors", 5, tmp_path)
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


def case_collective(ex: Any) -> None:
    t = time.monotonic()
    try:
        ex.requirements(num_ranks=2).submit(raise_while_peers_wait).result(timeout=30)
        record("collective", None)
    except KeyError as exc:
        record("collective", {"type": "KeyError", "notes": getattr(exc, "__notes__", []),
                              "elapsed": time.monotonic() - t})
    # the pool keeps serving on the ranks left
    record("after", ex.requirements(num_ranks=2, results="all").submit(rank_of).result(timeout=30))
    record("stuck", ex.stuck_ranks)


def test_rank_raising_while_peers_wait_in_collective(tmp_path: Path) -> None:
    run = run_case(HERE, "collective", 5, tmp_path, check=False)
    got = run["collective"]
    assert got["type"] == "KeyError"
    assert 0.9 < got["elapsed"] < 10                   # after the 1 s grace period
    assert "StuckRanksError" in got["notes"][0]
    assert run["after"] == [0, 1]                      # the pool keeps serving on other ranks
    assert len(run["stuck"]) == 1
    # leaving the block with a rank stuck forever aborts the job instead of hanging it
    assert run.proc.returncode != 0
    assert "stuck in tasks that never ended" in run.proc.stderr


def case_walltime(ex: Any) -> None:
    from rankpool import TaskTimeout
    t = time.monotonic()
    try:
        ex.requirements(walltime=0.5).submit(nap, 30).result(timeout=30)
        record("one", None)
    except TaskTimeout as exc:
        record("one", {"elapsed": time.monotonic() - t, "msg": str(exc)})
    t = time.monotonic()
    try:
        ex.requirements(num_ranks=2, walltime=0.5).submit(nap, 30).result(timeout=30)
        record("two", None)
    except TaskTimeout:
        record("two", {"elapsed": time.monotonic() - t})
    record("fast", ex.requirements(walltime=5).submit(nap, 0.01).result())
    record("after", ex.requirements(num_ranks=4).submit(allreduce, 1).result())


def test_walltime(tmp_path: Path) -> None:
    run = run_case(HERE, "walltime", 5, tmp_path)
    assert 0.4 < run["one"]["elapsed"] < 5
    assert "walltime of 0.5 s" in run["one"]["msg"]
    assert 0.4 < run["two"]["elapsed"] < 5
    assert run["fast"] == 0.01
    assert run["after"] == 4


def case_numpy(ex: Any) -> None:
    a = np.arange(2_000_000, dtype=np.float64)
    b = ex.submit(double_array, a).result()
    record("roundtrip", [bool(np.array_equal(b, a * 2)), str(b.dtype), b.shape[0]])
    small = np.arange(10, dtype=np.int16)
    record("small", ex.submit(double_array, small).result().tolist())
    parts = ex.requirements(num_ranks=3, results="all").submit(array_per_rank, 100_000).result()
    record("all", [[int(p[0]), p.shape[0], str(p.dtype)] for p in parts])


def test_numpy_roundtrip(tmp_path: Path) -> None:
    run = run_case(HERE, "numpy", 4, tmp_path)
    assert run["roundtrip"] == [True, "float64", 2_000_000]
    assert run["small"] == list(range(0, 20, 2))
    assert run["all"] == [[0, 100_000, "int32"], [1, 100_000, "int32"], [2, 100_000, "int32"]]


def case_many(ex: Any) -> None:
    n = int(os.environ.get("MANY", "5000"))
    views = [ex.requirements(num_ranks=w) for w in (2, 3, 4)]
    futs = [(2 + i % 3, views[i % 3].submit(allreduce, 1)) for i in range(n)]
    record("many", sum(f.result(timeout=120) == w for w, f in futs))


def test_5000_multi_rank_tasks_do_not_exhaust_communicators(tmp_path: Path) -> None:
    run = run_case(HERE, "many", 5, tmp_path, timeout=170)
    assert run["many"] == 5000


def case_bad(ex: Any) -> None:
    from mpi4py import MPI

    from rankpool import CommExecutor

    def err(call: Any) -> list[str] | None:
        try:
            call()
            return None
        except Exception as exc:
            return [type(exc).__name__, str(exc)]
    record("unknown_key", err(lambda: ex.requirements(gpus=1)))
    record("bad_value", err(lambda: ex.requirements(num_ranks=0)))
    record("bad_results", err(lambda: ex.requirements(results="some")))
    record("too_wide", err(lambda: ex.requirements(num_ranks=99).submit(allreduce, 1)))
    # a function without comm on 2 ranks is not refused: it runs once, as an MPI application
    record("no_comm", ex.requirements(num_ranks=2).submit(variable, "PARSL_NUM_RANKS").result())
    record("not_callable", err(lambda: ex.submit(42)))
    record("unpicklable_arg", err(lambda: ex.submit(echo, Unpicklable())))
    # refused before any collective call, so root alone may try
    record("bad_lend", err(lambda: CommExecutor(MPI.COMM_WORLD, lend=-1)))
    record("still_works", ex.submit(echo, 7).result())
    ex.shutdown()
    record("after_shutdown", err(lambda: ex.submit(echo, 1)))


def test_bad_requests_are_refused_at_submit(tmp_path: Path) -> None:
    run = run_case(HERE, "bad", 5, tmp_path)
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


def main_idle() -> None:
    """Every rank's pid first (a collective), then root measures the whole job's CPU while the
    pool is idle."""
    import psutil
    from mpi4py import MPI

    from rankpool import CommExecutor
    pids = MPI.COMM_WORLD.allgather(os.getpid())
    with CommExecutor(MPI.COMM_WORLD, root=0, grace=1.0) as ex:
        if ex is None:
            return
        procs = [psutil.Process(p) for p in pids]
        ex.requirements(num_ranks=len(pids) - 1).submit(allreduce, 1).result()
        time.sleep(1.0)  # let the back-off reach its idle cap
        before = [p.cpu_times() for p in procs]
        t = time.monotonic()
        time.sleep(3.0)
        elapsed = time.monotonic() - t
        after = [p.cpu_times() for p in procs]
        used = sum((a.user + a.system) - (b.user + b.system) for a, b in zip(after, before))
        record("idle_fraction", used / elapsed)


def test_idle_pool_of_8_ranks_uses_little_cpu(tmp_path: Path) -> None:
    run = run_case(HERE, "idle", 8, tmp_path)
    assert run["idle_fraction"] < 0.10                 # of one core, all 8 ranks together


if __name__ == "__main__":
    serve(globals(), grace=1.0)
    record("exit", True)  # rank 0 left the executor's block
