"""Shared test set-up: the tests directory on every pool's ``PYTHONPATH``, and the session's
check that nothing it started is left behind."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

# pools started by tests import the test modules' task functions, which import `waiting`
_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_TESTS, os.environ.get("PYTHONPATH"))
                                               if p)

# Ctrl-C as a terminal gives it: a run started in the background of a non-interactive shell
# (`cmd &`, as some CI runners do) inherits SIGINT ignored, and every program the tests start
# (the Ctrl-C tests' programs, the pools they interrupt) would inherit that too
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# -- what the session leaves behind ------------------------------------------------------------
# Every process this session starts inherits the marker (even those Parsl's LocalProvider or a
# batch system detach from pytest); a thread notes them and the /dev/shm files they map while
# tests run. When the session ends, any of them still running, or any of those files still in
# /dev/shm, fails the session, named with the test that was running when it was first seen.
# Nothing else on the machine (another test session's processes and files) is ever counted.
from leftovers import MARKER_ENV, Watch, own_mpi_segments  # noqa: E402

#: seconds the session's processes get to exit, and their files to go, once the last test ended
LEFTOVER_GRACE = 15.0
_SESSION_MARKER = f"{os.getpid()}-{secrets.token_hex(6)}"
os.environ[MARKER_ENV] = _SESSION_MARKER


class _SessionWatch:
    def __init__(self) -> None:
        self.watch = Watch(os.getpid(), _SESSION_MARKER)
        self.test = "(before the first test)"
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="leftover-watch", daemon=True)

    def _run(self) -> None:
        while not self.stopped.wait(0.5):
            try:
                self.watch.look(self.test)
            except Exception:  # a process that vanished mid-look: the next look sees the rest
                pass

    def report(self) -> list[str]:
        self.stopped.set()
        self.thread.join(5)
        self.watch.look("(after the last test)")
        procs, files = self.watch.gone(LEFTOVER_GRACE)
        helpers = _interpreter_helpers()
        procs = [p for p in procs if p.pid not in helpers]
        seen = self.watch.first_seen
        lines = []
        for proc in procs:
            try:
                what = " ".join(proc.cmdline())[:200]
            except Exception:
                what = "?"
            lines.append(f"process {proc.pid} still running ({what}); first seen during "
                         f"{seen.get(f'process {proc.pid}', '?')}")
        for name in files:
            owner = seen.get(name) or next((seen[p] for p in seen if name.startswith(p)), "?")
            lines.append(f"/dev/shm/{name} left behind; first seen during {owner}")
        for proc in procs:  # reported: now end them, so that the next session starts clean
            with contextlib.suppress(Exception):
                proc.kill()
        for name in files:
            with contextlib.suppress(OSError):
                os.unlink(f"/dev/shm/{name}")
        return lines


def _interpreter_helpers() -> set[int]:
    """The pids of this interpreter's own multiprocessing helpers (its resource tracker and
    forkserver, started by a library a test used): they end when pytest exits, so they are not
    left behind. Only these exact pids are excused, never a process found by name."""
    import multiprocessing.forkserver as forkserver
    import multiprocessing.resource_tracker as resource_tracker
    pids = {getattr(resource_tracker._resource_tracker, "_pid", None),
            getattr(forkserver._forkserver, "_forkserver_pid", None)}
    return {pid for pid in pids if pid}


_session_watch = _SessionWatch()


def pytest_sessionstart(session: pytest.Session) -> None:
    _session_watch.thread.start()


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    _session_watch.test = nodeid


def pytest_unconfigure(config: pytest.Config) -> None:
    """Open MPI leaves the shared-memory segment of a singleton (this process, where a test
    initialised MPI through mpi4py) in /dev/shm at ``MPI_Finalize``: remove this process's
    own, once no test runs."""
    for name in own_mpi_segments():
        with contextlib.suppress(OSError):
            os.unlink(f"/dev/shm/{name}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    lines = _session_watch.report()
    if not lines:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    text = "this test session left behind:\n  " + "\n  ".join(lines)
    if reporter is not None:
        reporter.write_sep("=", "leftovers", red=True)
        reporter.write_line(text)
    else:
        print(text, file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
