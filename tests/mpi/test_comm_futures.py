"""CommExecutor against the ``concurrent.futures`` contract, under a real ``mpiexec``.

Each case is a function of this module that rank ``root`` runs inside the executor's ``with``
block (the others serve); :func:`mpi_cases.run_case` starts ``mpiexec -n N python this_file
CASE`` and returns what the case recorded, and the test asserts on it next to the case.

Ports of CPython 3.11's ``test_concurrent_futures`` and of mpi4py's ``demo/futures/
test_futures.py`` that apply to an executor in general run against ``Executor`` in
``tests/integration/test_futures_contract.py``; this file holds what is specific to an
executor over a communicator (entering and leaving it, the kinds of communicator, a
communicator of size 1) and the RUNNING rule checked against real worker ranks.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import wait
from pathlib import Path
from typing import Any

import pytest
from mpi_cases import record, run_case, serve

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(120)]

HERE = Path(__file__).resolve()


# -- cases (run on root inside the with block) ---------------------------------------------------
def touch(path: str) -> None:
    Path(path).touch()


def slow_touch(path: str, delay: float) -> str:
    time.sleep(delay)
    Path(path).write_text("done")
    return "done"


def case_running(ex: Any) -> None:
    """A task becomes RUNNING when its rank starts it; only a task not started cancels."""
    marker = os.path.join(os.environ["CASE_DIR"], "ran")
    long = ex.submit(time.sleep, 1.5)
    behind = ex.submit(touch, marker)        # prefetched on the only worker rank
    deadline = time.monotonic() + 1.0
    while not long.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    record("long_running", long.running())
    record("long_cancel", long.cancel())
    record("behind_running", behind.running())
    record("behind_cancel", behind.cancel())
    t = time.monotonic()
    done, _ = wait([behind], timeout=10)     # a cancelled future is returned by wait() at once
    record("wait_cancelled", [behind in done, time.monotonic() - t < 1])
    record("long_result", [long.result(timeout=10), long.cancelled()])
    ex.submit(time.sleep, 0).result()        # the rank went past where behind was queued
    record("behind_ran", os.path.exists(marker))


def case_shutdown_cancel(ex: Any) -> None:
    """shutdown(cancel_futures=True) cancels what has not started and never what runs."""
    running = ex.submit(time.sleep, 1.0)
    deadline = time.monotonic() + 1.0
    while not running.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    queued = [ex.submit(time.sleep, 1.0) for _ in range(5)]
    ex.shutdown(wait=True, cancel_futures=True)
    record("running", [running.cancelled(), running.result()])
    record("queued", [f.cancelled() for f in queued])


def case_reenter(ex: Any) -> None:
    try:
        ex.__enter__()
        record("reenter", "accepted")
    except RuntimeError as exc:
        record("reenter", str(exc))


def test_task_becomes_running_when_its_rank_starts_it(tmp_path):
    got = run_case(HERE, "running", 2, tmp_path)
    assert got["long_running"] is True and got["long_cancel"] is False
    assert got["behind_running"] is False and got["behind_cancel"] is True
    assert got["wait_cancelled"] == [True, True]
    assert got["long_result"] == [None, False]
    assert got["behind_ran"] is False                # a cancelled prefetched task never runs


def test_shutdown_cancel_futures_spares_running_tasks(tmp_path):
    got = run_case(HERE, "shutdown_cancel", 2, tmp_path)
    assert got["running"] == [False, None]
    assert got["queued"] == [True] * 5


def test_reentry_refused_and_leaving_twice_is_harmless(tmp_path):
    got = run_case(HERE, "reenter", 3, tmp_path)
    assert "entered twice" in got["reenter"]
    assert got["left_twice"] == [True, True, True]


def test_wrong_communicators_are_refused(tmp_path):
    got = run_case(HERE, "communicators", 2, tmp_path)
    assert got["intercomm"][0] == "ValueError" and "intercommunicator" in got["intercomm"][1]
    assert got["null"][0] == "ValueError" and "COMM_NULL" in got["null"][1]
    assert got["not_comm"][0] == "TypeError" and "str" in got["not_comm"][1]


def test_size_one_communicator_runs_tasks_beside_the_driver(tmp_path):
    got = run_case(HERE, "solo", 1, tmp_path)
    assert got["pow"] == 1024
    assert got["other_thread"] is True
    assert got["comm_size"] == 1
    assert got["wide"][0] == "ResourceSpecError" and "one rank" in got["wide"][1]
    assert got["running"] == [True, False]
    assert got["cancelled_never_ran"] is True
    assert got["self"] == 1024                       # MPI.COMM_SELF on every rank of a bigger job


def case_generic(ex: Any) -> None:
    """Every generic check of tests/futures_checks.py, against this CommExecutor."""
    import traceback

    from futures_checks import CHECKS, quiet
    failures = {}
    for name, check in CHECKS.items():
        try:
            quiet(ex)
            check(ex)
        except BaseException:
            failures[name] = traceback.format_exc(limit=4)
    record("generic", failures)
    record("generic_count", len(CHECKS))


def case_cancel_race(ex: Any) -> None:
    from futures_checks import check_cancelled_task_never_runs
    check_cancelled_task_never_runs(ex)
    record("cancel_race", "passed")


def test_cancelled_task_never_runs_on_worker_ranks(tmp_path):
    """cancel() returning True means the function never ran, even for cancels that meet tasks
    as their ranks start them (the check of futures_checks.py, alone, on two worker ranks)."""
    got = run_case(HERE, "cancel_race", 3, tmp_path)
    assert got["cancel_race"] == "passed"


def test_generic_executor_checks(tmp_path):
    got = run_case(HERE, "generic", 3, tmp_path, timeout=110)
    assert got["generic"] == {} and got["generic_count"] > 25


def main_initializer() -> None:
    from futures_checks import fail_on_rank_two, read_value, set_value
    from mpi4py import MPI

    from rankpool import CommExecutor
    with CommExecutor(MPI.COMM_WORLD, initializer=set_value, initargs=(42,)) as ex:
        if ex is not None:
            record("values", ex.requirements(num_ranks=ex.num_workers, results="all")
                   .submit(read_value).result())
            record("num_workers", ex.num_workers)
    with CommExecutor(MPI.COMM_WORLD, initializer=fail_on_rank_two) as ex:
        if ex is not None:
            try:
                ex.submit(pow, 2, 3)
                record("broken", ["accepted", ""])
            except Exception as exc:
                record("broken", [type(exc).__name__, str(exc)])


def test_initializer_runs_once_per_worker_rank_and_a_failure_breaks(tmp_path):
    got = run_case(HERE, "initializer", 3, tmp_path)
    assert got["values"] == [42, 42] and got["num_workers"] == 2
    assert got["broken"][0] == "BrokenPool"
    assert "initializer failed on rank 2" in got["broken"][1] and "no model" in got["broken"][1]


def test_dropped_executor_shuts_down_and_finishes_its_work(tmp_path):
    """CPython's test_del_shutdown for CommExecutor: root's executor, no longer referenced, is
    collected (its thread does not hold it), its pending task still ends, then its thread
    stops the worker ranks (which leave their with block) and frees the pool communicator."""
    got = run_case(HERE, "dropped", 3, tmp_path, timeout=60)
    assert got["collected"] is True
    assert got["result"] == "done"
    assert (tmp_path / "dropped").read_text() == "done"


def test_interpreter_exit_waits_for_pending_futures(tmp_path):
    """A program that ends with its CommExecutor open and a task pending does not exit before
    the task is done; then the worker ranks are stopped and every rank exits 0."""
    got = run_case(HERE, "exit_waits", 3, tmp_path, timeout=60)
    assert got["pending_at_end"] is True
    assert (tmp_path / "at-exit").read_text() == "done"


# -- cases outside a with block -------------------------------------------------------------------
def main_communicators() -> None:
    from mpi4py import MPI

    from rankpool import CommExecutor
    world = MPI.COMM_WORLD
    half = world.Split(world.Get_rank() % 2, 0)
    inter = half.Create_intercomm(0, world, 1 - world.Get_rank() % 2, 7)
    for key, comm in (("intercomm", inter), ("null", MPI.COMM_NULL), ("not_comm", "world")):
        try:
            CommExecutor(comm)
            record(key, ["accepted", ""])
        except Exception as exc:
            record(key, [type(exc).__name__, str(exc)])
    inter.Free()
    half.Free()


def main_solo() -> None:
    from mpi4py import MPI

    from rankpool import CommExecutor
    main_thread = threading.get_ident()
    with CommExecutor(MPI.COMM_WORLD) as ex:
        record("pow", ex.submit(pow, 2, 10).result())
        record("other_thread", ex.submit(threading.get_ident).result() != main_thread)
        record("comm_size", ex.submit(lambda comm=None: comm.Get_size()).result())
        try:
            ex.requirements(num_ranks=2).submit(pow, 2, 3)
            record("wide", ["accepted", ""])
        except Exception as exc:
            record("wide", [type(exc).__name__, str(exc)])
        marker = os.path.join(os.environ["CASE_DIR"], "solo-ran")
        long = ex.submit(time.sleep, 0.5)
        behind = ex.submit(touch, marker)
        deadline = time.monotonic() + 1.0
        while not long.running() and time.monotonic() < deadline:
            time.sleep(0.01)
        record("running", [long.running(), long.cancel()])
        behind.cancel()
        long.result()
        ex.submit(time.sleep, 0).result()
        record("cancelled_never_ran", behind.cancelled() and not os.path.exists(marker))
    with CommExecutor(MPI.COMM_SELF) as ex:
        record("self", ex.submit(pow, 2, 10).result())


def main_reenter() -> None:
    from mpi4py import MPI

    from rankpool import CommExecutor
    ex = CommExecutor(MPI.COMM_WORLD)
    with ex as inside:
        if inside is not None:
            case_reenter(inside)
    ex.__exit__(None, None, None)                   # leaving again frees nothing twice
    left = MPI.COMM_WORLD.gather(ex.pool_comm == MPI.COMM_NULL, root=0)
    if left is not None:
        record("left_twice", left)


def root_executor() -> Any:
    """A CommExecutor over the world, never entered on root, which gets it; the other ranks
    serve in its with block until root's executor stops them, then get None."""
    from mpi4py import MPI

    from rankpool import CommExecutor
    ex = CommExecutor(MPI.COMM_WORLD)
    if ex.is_root:
        return ex
    with ex:
        pass
    return None


def main_dropped() -> None:
    """Root drops its executor without shutdown, a task pending; the other ranks serve."""
    import gc
    import weakref

    from mpi4py import MPI
    from waiting import wait_for
    ex = root_executor()
    if ex is None:
        return
    pool_comm = ex.pool_comm
    future = ex.submit(slow_touch, os.path.join(os.environ["CASE_DIR"], "dropped"), 0.5)
    ref = weakref.ref(ex)
    del ex
    gc.collect()
    record("collected", ref() is None)
    record("result", future.result(timeout=30))       # pending work still ends
    wait_for(lambda: not any(t.name == "rankpool-manager" for t in threading.enumerate()), 30)
    wait_for(lambda: pool_comm == MPI.COMM_NULL, 10)  # freed by the closing thread


def main_exit_waits() -> None:
    """Root's program ends with its executor open and a task pending; the others serve."""
    ex = root_executor()
    if ex is None:
        return
    future = ex.submit(slow_touch, os.path.join(os.environ["CASE_DIR"], "at-exit"), 1.0)
    _open.append((ex, future))                          # referenced until the interpreter exits
    record("pending_at_end", not future.done())


_open: list[Any] = []


if __name__ == "__main__":
    serve(globals())
