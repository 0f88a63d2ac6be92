"""CommExecutor under a real ``mpiexec -n 4``: what tasks that exit do, Ctrl-C, and aborts.

Each test writes its program next to its assertions and runs it through :func:`start`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from leftovers import Watch
from waiting import wait_for

from rankpool.launchers.mpiexec import find_mpiexec

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(120)]

HEADER = """\
import json, os, sys, time
from mpi4py import MPI
from rankpool import CommExecutor

def show(key, value):  # one write: lines of several ranks never mix
    os.write(1, f"SHOW {key} {json.dumps(value)}\\n".encode())

def outcome(future):
    if future.cancelled():
        return "cancelled"
    exc = future.exception()
    return "ok" if exc is None else type(exc).__name__
"""


def start(tmp_path: Path, body: str, n: int = 4) -> subprocess.Popen[str]:
    """``mpiexec -n n python PROGRAM`` in a session of its own, the program being HEADER+body."""
    program = tmp_path / "program.py"
    program.write_text(HEADER + textwrap.dedent(body))
    return subprocess.Popen([find_mpiexec(), "-n", str(n), sys.executable, str(program)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, start_new_session=True)


def shown(stdout: str) -> dict[str, object]:
    """The ``SHOW key json`` lines a program printed with ``show``."""
    found = {}
    for line in stdout.splitlines():
        if line.startswith("SHOW "):
            key, _, value = line[5:].partition(" ")
            found[key] = json.loads(value)
    return found


def running(proc: subprocess.Popen[str]) -> bool:
    """True while ``proc`` runs; a program that ended early fails the test with its output."""
    if proc.poll() is not None:
        raise AssertionError(f"the program exited with {proc.returncode}: {proc.communicate()}")
    return True


def finish(proc: subprocess.Popen[str], timeout: float = 90) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def test_tasks_raising_any_base_exception_fail_alone(tmp_path):
    """SystemExit, KeyboardInterrupt, GeneratorExit and a user's own BaseException, raised by
    1-rank and 3-rank tasks, fail their own future with TaskExit; the ranks serve on."""
    proc = start(tmp_path, """
        class Halt(BaseException):
            pass

        def raise_it(kind, comm=None):
            if comm.Get_rank() == 0 or kind != "GeneratorExit":
                raise {"SystemExit": SystemExit(3), "KeyboardInterrupt": KeyboardInterrupt(),
                       "GeneratorExit": GeneratorExit(), "Halt": Halt("stop")}[kind]
            return comm.Get_rank()

        with CommExecutor(MPI.COMM_WORLD) as ex:
            if ex is not None:
                for ranks in (1, 3):
                    view = ex.requirements(num_ranks=ranks)
                    for kind in ("SystemExit", "KeyboardInterrupt", "GeneratorExit", "Halt"):
                        exc = view.submit(raise_it, kind).exception(timeout=30)
                        show(f"{kind.upper()}_{ranks}", [type(exc).__name__, exc.type_name,
                             exc.code, type(exc.__context__).__name__, str(exc)])
                    show(f"AFTER_{ranks}",
                         view.submit(lambda comm=None: comm.allreduce(1)).result())
        show("END", MPI.COMM_WORLD.Get_rank())
        """)
    out, err = finish(proc)
    got = shown(out)
    assert proc.returncode == 0, err
    for ranks in (1, 3):
        assert got[f"SYSTEMEXIT_{ranks}"][:4] == ["TaskExit", "SystemExit", 3, "SystemExit"]
        assert got[f"KEYBOARDINTERRUPT_{ranks}"][:4] == ["TaskExit", "KeyboardInterrupt", None,
                                                         "KeyboardInterrupt"]
        assert got[f"GENERATOREXIT_{ranks}"][:2] == ["TaskExit", "GeneratorExit"]
        assert got[f"HALT_{ranks}"][:2] == ["TaskExit", "__main__.Halt"]
        assert got[f"AFTER_{ranks}"] == ranks            # the ranks serve on
    assert out.count("SHOW END") == 4                  # every rank left the block normally


def test_ctrl_c_stops_every_rank_promptly_and_cleanly(tmp_path):
    """Ctrl-C (mpiexec forwards SIGINT to every rank) while 3 worker ranks run long tasks and
    more wait: every rank exits within a few seconds, root prints one line, the running
    tasks' futures fail, the queued ones are cancelled, nothing is left running or in /dev/shm."""
    proc = start(tmp_path, """
        def nap(seconds, comm=None):
            open(f"started-{os.getpid()}-{time.monotonic_ns()}", "w").close()
            time.sleep(seconds)

        futures = []
        try:
            with CommExecutor(MPI.COMM_WORLD, depth=2) as ex:
                if ex is not None:
                    futures = [ex.submit(nap, 60) for _ in range(12)]
                    futures.append(ex.requirements(num_ranks=3).submit(nap, 60))
                    for f in futures:
                        f.exception()
        except KeyboardInterrupt:
            if futures:
                show("STATES", [outcome(f) for f in futures])
                show("RUNNING", [str(f.exception()) for f in futures if not f.cancelled()])
            raise
        """)
    watch = Watch(proc.pid)
    wait_for(lambda: running(proc) and watch.look()
             and len(list(tmp_path.glob("started-*"))) >= 3, timeout=60)
    watch.look()
    t0 = time.monotonic()
    os.kill(proc.pid, signal.SIGINT)                     # what Ctrl-C does to mpiexec
    out, err = finish(proc, timeout=30)
    elapsed = time.monotonic() - t0
    procs, files = watch.gone()
    got = shown(out)
    assert elapsed < 5.0, (elapsed, err)          # about 3 s on an idle machine
    assert "STATES" in got, (out, err)
    assert len(list(tmp_path.glob("started-*"))) == 3    # nothing queued started afterwards
    states = got["STATES"]
    assert set(states) <= {"cancelled", "TaskExit"}
    assert states[:12].count("TaskExit") == 3            # the three running ones failed,
    assert states[:12].count("cancelled") == 9           # those queued, here or on a rank, not
    assert all("KeyboardInterrupt" in text for text in got["RUNNING"])
    assert err.count("rankpool: interrupted") == 1 and "stopping the CommExecutor" in err
    assert procs == [], [p.cmdline() for p in procs]
    assert files == []
    assert any(n.startswith("mpich_shm") for n in watch.shm)   # the check saw MPICH's file


def test_error_leaving_the_block_is_printed_before_the_abort(tmp_path):
    """An exception leaving the ``with`` block while a rank is stuck forever is printed, with
    its traceback, before MPI_Abort; the abort message names the rank and its task."""
    proc = start(tmp_path, """
        import signal

        def hang(comm=None):
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            if comm.Get_rank() == 0:
                raise ValueError("rank 0 gives up")
            while True:
                time.sleep(0.05)

        with CommExecutor(MPI.COMM_WORLD, grace=0.5) as ex:
            if ex is not None:
                f = ex.requirements(num_ranks=2).submit(hang)
                f.exception(timeout=30)
                show("STUCK", [ex.stuck_ranks, f.task_id])
                raise RuntimeError("the driver failed after the stuck task")
        """, n=3)
    out, err = finish(proc)
    got = shown(out)
    stuck, task_id = got["STUCK"]
    assert proc.returncode != 0
    printed = err.index("RuntimeError: the driver failed after the stuck task")
    aborted = err.index("stuck in tasks that never ended")
    assert "Traceback" in err[:printed] and printed < aborted
    assert f"rank {stuck[0]} in task {task_id}" in err[aborted:]
