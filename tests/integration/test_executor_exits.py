"""``rankpool.Executor``: tasks that exit, done-callbacks that raise, Ctrl-C, a clean stop.

The Ctrl-C case runs a real program (written here, next to its assertions) in a subprocess
and interrupts it as a terminal would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import executor
from leftovers import Watch
from waiting import wait_for

from rankpool import TaskExit

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(120)]


class Halt(BaseException):
    pass


def raise_it(kind: str) -> None:
    raise {"exit": SystemExit(0), "interrupt": KeyboardInterrupt(),
           "generator": GeneratorExit(), "halt": Halt("stop")}[kind]


def test_tasks_that_exit_fail_alone_and_callbacks_cannot_kill_the_client(tmp_path: Path) -> None:
    """sys.exit(0) in a task no longer ends the submitting program from f.result(); a
    done-callback raising SystemExit is logged, and the futures after it still settle."""
    with executor(tmp_path, max_ranks=2) as ex:
        for kind, type_name in (("exit", "SystemExit"), ("interrupt", "KeyboardInterrupt"),
                                ("generator", "GeneratorExit"), ("halt", "Halt")):
            with pytest.raises(TaskExit) as caught:
                ex.submit(raise_it, kind).result(timeout=90)
            assert caught.value.type_name.endswith(type_name)
        assert caught.value.code is None
        with pytest.raises(TaskExit) as exited:
            ex.submit(raise_it, "exit").result(timeout=90)
        assert exited.value.code == 0
        called = threading.Event()

        def bad_callback(f: Any) -> None:
            called.set()
            sys.exit(3)
        first = ex.submit(pow, 2, 3)
        first.add_done_callback(bad_callback)
        assert first.result(timeout=90) == 8
        wait_for(called.is_set)
        assert [ex.submit(pow, 2, i).result(timeout=90) for i in range(4)] == [1, 2, 4, 8]
        assert ex.client._thread.is_alive()


PROGRAM = """\
import json, os, sys, time
from rankpool import Executor

def nap(seconds, marks):
    open(os.path.join(marks, f"started-{os.getpid()}-{time.monotonic_ns()}"), "w").close()
    time.sleep(seconds)

if __name__ == "__main__":
    futures = []
    try:
        with Executor(max_ranks=2, run_dir=sys.argv[1]) as ex:
            futures = [ex.submit(nap, 60, sys.argv[2]) for _ in range(10)]
            for f in futures:
                f.exception()
    except KeyboardInterrupt:
        print("STATES", json.dumps(["cancelled" if f.cancelled() else
                                    type(f.exception()).__name__ for f in futures]), flush=True)
        raise
"""


def test_ctrl_c_with_work_queued_returns_within_seconds(tmp_path: Path) -> None:
    """Ctrl-C inside ``with Executor(...)`` while 2 tasks run and 8 wait: one line says what
    stops, the program ends within about 3 s, the running tasks' futures fail, the queued
    ones are cancelled, and no process of it (interchange, mpiexec, ranks) nor file of it in
    /dev/shm is left."""
    marks = tmp_path / "marks"
    marks.mkdir()
    program = tmp_path / "program.py"
    program.write_text(textwrap.dedent(PROGRAM))
    proc = subprocess.Popen([sys.executable, str(program), str(tmp_path / "run"), str(marks)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, start_new_session=True)
    watch = Watch(proc.pid)
    try:
        wait_for(lambda: watch.look() and len(list(marks.iterdir())) >= 2, timeout=60)
        watch.look()
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)            # what Ctrl-C at its terminal does
        out, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    procs, files = watch.gone()
    assert elapsed < 5.0, (elapsed, err)          # about 3 s on an idle machine
    states = json.loads(out.split("STATES ", 1)[1].splitlines()[0])
    assert len(list(marks.iterdir())) == 2         # nothing queued started afterwards
    assert len(states) == 10 and states.count("cancelled") >= 8, states  # those not started
    assert set(states) <= {"cancelled", "TaskExit", "ExecutorShutdown"}, states
    assert err.count("rankpool: interrupted") == 1, err
    assert procs == [], [p.cmdline() for p in procs]
    assert files == []
    assert any(n.startswith("rankpool-") for n in watch.shm)  # the check saw the run's files


OTHER_THREAD = """\
import os, signal, sys, threading, time
from rankpool import Executor

if __name__ == "__main__":
    with Executor(max_ranks=1, run_dir=sys.argv[1]) as ex:
        future = ex.submit(time.sleep, 60)
        while not future.running():
            time.sleep(0.05)
        # the kernel may hand a process's SIGINT to any of its threads: here, the client's
        threading.Timer(0.5, signal.pthread_kill, (ex.client._thread.ident, signal.SIGINT)).start()
        t0 = time.monotonic()
        try:
            future.result()
        except KeyboardInterrupt:
            print(f"INTERRUPTED after {time.monotonic() - t0:.2f} s", flush=True)
            raise
"""


def test_ctrl_c_taken_by_another_thread_still_interrupts_a_waiting_result(
        tmp_path: Path) -> None:
    """Python runs signal handlers in the main thread only once it wakes: a main thread asleep
    in ``result()`` wakes in slices, so a SIGINT delivered to another of the program's threads
    still interrupts it within a second."""
    program = tmp_path / "program.py"
    program.write_text(textwrap.dedent(OTHER_THREAD))
    proc = subprocess.run([sys.executable, str(program), str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False)
    assert "INTERRUPTED after" in proc.stdout, (proc.stdout, proc.stderr)
    waited = float(proc.stdout.split("INTERRUPTED after ", 1)[1].split()[0])
    assert waited < 1.5, waited  # 0.5 s to the signal, then at most one slice
    assert proc.stderr.count("rankpool: interrupted") == 1, proc.stderr
