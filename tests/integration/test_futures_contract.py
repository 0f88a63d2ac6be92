"""``rankpool.Executor`` against the ``concurrent.futures`` contract.

The generic executor checks of ``tests/futures_checks.py`` (our versions of CPython 3.11's
``ExecutorTest``, ``WaitTests`` and ``AsCompletedTests`` and of mpi4py's executor tests; the
peer tests that cannot apply are listed there with the reason) run against one Executor of two
worker ranks; the ``ExecutorShutdownTest`` ports need fresh executors or a fresh interpreter
and are here, and so are ``FutureTests`` on ``TaskFuture``.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import CancelledError, InvalidStateError, TimeoutError, wait
from pathlib import Path

import psutil
import pytest
from futures_checks import CHECKS, fail_on_rank_two, quiet, read_value, set_value
from helpers import FAST, executor, pool_tree, wait_gone

from rankpool import Executor
from rankpool.errors import BrokenPool
from rankpool.frontends.engine import Engine
from rankpool.frontends.task_future import TaskFuture
from rankpool.task.resources import parse_spec
from rankpool.task.serialize import dumps_data

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    with executor(tmp_path_factory.mktemp("contract")) as ex:
        yield ex.bootup()                    # the checks' timings leave out the pool's start


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_generic(shared, name):
    quiet(shared)
    CHECKS[name](shared)


# -- ExecutorShutdownTest -------------------------------------------------------------------------
def test_run_after_shutdown(tmp_path):
    with executor(tmp_path) as ex:
        ex.shutdown()
        with pytest.raises(RuntimeError, match="after shutdown"):
            ex.submit(pow, 2, 5)
        with pytest.raises(RuntimeError, match="after shutdown"):
            ex.bootup()


def test_hang_issue12364(tmp_path):
    with executor(tmp_path) as ex:
        fs = [ex.submit(time.sleep, 0.01) for _ in range(50)]
        ex.shutdown()
        assert [f.result() for f in fs] == [None] * 50


def test_cancel_futures_spares_running_tasks(tmp_path):
    """shutdown(cancel_futures=True) cancels what has not started, never a running task."""
    with executor(tmp_path) as ex:
        ex.bootup()
        running = [ex.submit(time.sleep, 1.0) for _ in range(2)]
        deadline = time.monotonic() + 5
        while not all(f.running() for f in running) and time.monotonic() < deadline:
            time.sleep(0.01)
        queued = [ex.submit(time.sleep, 1.0) for _ in range(20)]
        ex.shutdown(wait=True, cancel_futures=True)
        assert [f.result() for f in running] == [None, None]
        assert sum(f.cancelled() for f in queued) >= 15   # all but what started meanwhile
        assert all(f.done() for f in queued)


def test_cancel_futures_wait_false(tmp_path):
    with executor(tmp_path) as ex:
        fs = [ex.submit(time.sleep, 0.5) for _ in range(10)]
        ex.shutdown(wait=False, cancel_futures=True)
        wait(fs, timeout=30)
        assert all(f.done() for f in fs) and any(f.cancelled() for f in fs)


def test_prefetched_task_cancelled_never_runs(tmp_path):
    marker = tmp_path / "ran"
    with executor(tmp_path, max_ranks=1) as ex:
        ex.bootup()
        long = ex.submit(time.sleep, 1.5)
        behind = ex.submit(Path.touch, marker)           # queued behind it on the only rank
        deadline = time.monotonic() + 5
        while not long.running() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert long.running() and not long.cancel()
        assert not behind.running() and behind.cancel()
        assert long.result() is None
        ex.submit(time.sleep, 0).result()                # the rank went past where it was
        assert not marker.exists()
        assert ex.outstanding() == 0


def test_unreferenced_executor_shuts_down(tmp_path):
    """CPython's test_del_shutdown: an executor nobody references stops its threads and
    processes (its threads do not keep it alive)."""
    before = set(threading.enumerate())
    ex = Executor(**FAST, max_ranks=1, run_dir=str(tmp_path / "run"))
    assert ex.submit(pow, 2, 3).result() == 8
    procs = pool_tree(ex) + [psutil.Process(ex.client.proc.pid)]
    threads = [t for t in threading.enumerate() if t not in before]
    assert {t.name for t in threads} >= {"rankpool-client", "rankpool-blocks"}
    del ex
    gc.collect()
    wait_gone(procs, timeout=30)
    for t in threads:
        t.join(timeout=10)
        assert not t.is_alive(), t.name


# -- the interpreter's end ------------------------------------------------------------------------
def run_program(body: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], dict]:
    code = textwrap.dedent(f"""
        import json, os, sys, time
        from rankpool import Executor
        from helpers import pool_tree
        pids = {{}}
        def note(ex):
            pids["procs"] = [p.pid for p in pool_tree(ex)] + [ex.client.proc.pid]
            with open({str(tmp_path / "pids.json")!r}, "w") as f:
                json.dump(pids, f)
        ex = Executor(max_ranks=2, run_dir={str(tmp_path / "run")!r})
    """) + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=90, cwd=str(tmp_path), env=os.environ.copy())
    pids = json.loads((tmp_path / "pids.json").read_text()) if (tmp_path / "pids.json").exists() \
        else {}
    return proc, pids


@pytest.mark.parametrize("ending", ["", "ex.shutdown(wait=False)"])
def test_program_waits_for_pending_futures_then_nothing_outlives_it(tmp_path, ending):
    """CPython's test_interpreter_shutdown: the program does not exit before its pending
    futures are done, whatever ``wait`` was (or with no shutdown at all); then the pool and
    the interchange stop."""
    proc, pids = run_program(f"""
        note(ex)
        f = ex.submit(time.sleep, 1.0)
        f.add_done_callback(lambda f: print("done", flush=True))
        {ending}
        print("leaving", flush=True)
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["leaving", "done"]
    gone = [psutil.Process(p) for p in pids["procs"] if psutil.pid_exists(p)]
    wait_gone(gone, timeout=20)


def test_submit_after_interpreter_shutdown(tmp_path):
    """CPython's test_submit_after_interpreter_shutdown: submit() from an atexit hook raises."""
    proc, _ = run_program("""
        import atexit
        @atexit.register
        def run_last():
            try:
                ex.submit(pow, 2, 3)
            except RuntimeError as exc:
                print("refused:", exc, flush=True)
        ex.submit(pow, 2, 3).result()
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "refused: cannot schedule new futures after interpreter shutdown" in proc.stdout


# -- initializer, bootup, num_workers --------------------------------------------------------------
def test_initializer_runs_once_per_worker_rank(tmp_path):
    with executor(tmp_path, initializer=set_value, initargs=(7,)) as ex:
        assert ex.num_workers == 2
        assert ex.requirements(num_ranks=2, results="all").submit(read_value).result() == [7, 7]


def test_failing_initializer_breaks_the_executor(tmp_path):
    with executor(tmp_path, initializer=fail_on_rank_two) as ex:
        f = ex.submit(pow, 2, 3)
        with pytest.raises(BrokenPool, match="initializer failed on rank 2.*no model"):
            f.result(timeout=60)
        with pytest.raises(BrokenPool, match="initializer failed"):
            ex.submit(pow, 2, 3)


def test_bad_initializer_and_chunksize_refused(tmp_path):
    with pytest.raises(TypeError, match="initializer"):
        Executor(initializer=3, run_dir=str(tmp_path))
    with pytest.raises(ValueError, match="initargs"):
        Executor(initargs=(1,), run_dir=str(tmp_path))


def test_bootup_waits_until_the_pool_is_up(tmp_path):
    with executor(tmp_path) as ex:
        assert ex.bootup() is ex
        assert len(ex.pools()) == 1                      # registered by the time it returns


# -- FutureTests on TaskFuture --------------------------------------------------------------------
def made(state: str = "PENDING", result=None, exception=None) -> TaskFuture:
    f = TaskFuture(1)
    f._state, f._result, f._exception = state, result, exception
    return f


def test_future_done_callbacks():
    seen = []
    f = TaskFuture(1)
    f.add_done_callback(lambda fut: seen.append(fut.result()))
    f.set_result(5)
    assert seen == [5]
    f2 = TaskFuture(2)
    f2.add_done_callback(lambda fut: seen.append(type(fut.exception()).__name__))
    f2.set_exception(KeyError())
    assert seen == [5, "KeyError"]
    f3 = TaskFuture(3)
    f3.add_done_callback(lambda fut: seen.append(fut.cancelled()))
    assert f3.cancel()
    assert seen == [5, "KeyError", True]
    done = made("FINISHED", result=1)
    done.add_done_callback(lambda fut: seen.append("already"))
    assert seen[-1] == "already"


def test_engine_futures_hold_no_callback_or_waiter_list_until_one_is_needed():
    engine = Engine()
    _, f = engine.task(pow, (2, 3), {}, parse_spec(None))
    _, g = engine.task(pow, (2, 4), {}, parse_spec(None))
    assert f._done_callbacks == () and g._done_callbacks == ()  # the class's shared tuple
    assert f._waiter_list is None and g._waiter_list is None
    seen = []
    f.add_done_callback(lambda fut: seen.append(("first", fut.result())))
    f.add_done_callback(lambda fut: seen.append(("second", fut.result())))
    assert g._done_callbacks == ()                             # f's list is f's own
    engine.resolve(([f.task_id, g.task_id], [dumps_data(8)[0], dumps_data(16)[0]]), ())
    assert seen == [("first", 8), ("second", 8)]
    g.add_done_callback(lambda fut: seen.append(("done already", fut.result())))
    assert seen[-1] == ("done already", 16)
    _, h = engine.task(pow, (2, 5), {}, parse_spec(None))
    h.add_done_callback(lambda fut: seen.append(("cancelled", fut.cancelled())))
    assert h.cancel() and seen[-1] == ("cancelled", True)
    _, waited = engine.task(pow, (2, 6), {}, parse_spec(None))
    threading.Timer(0.2, engine.resolve, (([waited.task_id], [dumps_data(64)[0]]), ())).start()
    done, _ = wait([waited], timeout=10)   # installs a waiter, which the settling tells
    assert done == {waited} and waited.result() == 64 and waited._waiter_list == []


def test_future_callback_that_raises_is_logged(caplog):
    f = TaskFuture(1)
    f.add_done_callback(lambda fut: 1 / 0)
    f.set_result(1)
    assert "ZeroDivisionError" in caplog.text


def test_future_states_and_cancel():
    assert made("PENDING").cancel()
    assert made("CANCELLED").cancel() and made("CANCELLED_AND_NOTIFIED").cancel()
    assert not made("RUNNING").cancel() and not made("FINISHED", 1).cancel()
    f = made("PENDING")
    assert f.cancel() and f.cancelled() and f.done() and not f.running()
    assert f._state == "CANCELLED_AND_NOTIFIED"     # waiters told at once
    assert made("RUNNING").running() and not made("RUNNING").done()
    assert "state=FINISHED" in repr(made("FINISHED", 1))


def test_future_result_and_exception():
    assert made("FINISHED", result=42).result(timeout=0) == 42
    with pytest.raises(OSError):
        made("FINISHED", exception=OSError()).result(timeout=0)
    with pytest.raises(TimeoutError):
        made("PENDING").result(timeout=0)
    with pytest.raises(TimeoutError):
        made("RUNNING").exception(timeout=0.05)
    with pytest.raises(CancelledError):
        made("CANCELLED").result()
    assert isinstance(made("FINISHED", exception=OSError()).exception(), OSError)
    f = TaskFuture(1)
    threading.Timer(0.1, f.set_result, (7,)).start()
    assert f.result(timeout=5) == 7
    with pytest.raises(InvalidStateError):
        f.set_result(8)
    with pytest.raises(InvalidStateError):
        f.set_exception(ValueError())
