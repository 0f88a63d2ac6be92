"""The watch over a spawn's processes, without MPI: this process stands for the launcher
(Open MPI's daemon, whose children the spawned processes are, or Hydra's mpiexec, with proxies
between), and the "spawn call" is the ``with`` block."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from rankpool.mpi_pool import spawn_watch
from rankpool.mpi_pool.spawn_watch import Ending, SpawnWatch

pytestmark = pytest.mark.timeout(60)

if not hasattr(os, "pidfd_open"):
    pytest.skip("Linux only", allow_module_level=True)


class Told:
    """What a watch's ``on_ended`` was called with."""

    def __init__(self) -> None:
        self.endings: list[Ending] = []
        self.called = threading.Event()

    def __call__(self, ending: Ending) -> None:
        self.endings.append(ending)
        self.called.set()


def _start(code: str, n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]


def test_processes_that_all_end_before_the_call_returns_are_reported_with_their_statuses(
        ) -> None:
    told = Told()
    with SpawnWatch(os.getpid(), 2, told, flat=True):
        procs = _start("import sys; sys.exit(3)", 2)  # zombies until waited for: readable
        assert told.called.wait(20)
    assert [p.wait(10) for p in procs] == [3, 3]
    assert told.endings == [Ending(2, 2, (3, 3))]


def test_nothing_is_reported_while_a_process_lives_or_once_the_call_returned() -> None:
    told = Told()
    with SpawnWatch(os.getpid(), 2, told, flat=True):
        procs = _start("import time; time.sleep(0.5)", 1) + _start("import time; time.sleep(30)",
                                                                  1)
        procs[0].wait(10)
        assert not told.called.wait(1.0)
    procs[1].kill()
    procs[1].wait(10)
    assert not told.called.wait(0.5) and told.endings == []


def test_processes_never_seen_count_as_ended_after_a_quiet_while(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spawn_watch, "UNSEEN_AFTER", 1.0)
    told = Told()
    with SpawnWatch(os.getpid(), 3, told, flat=True):  # 3 asked for, 1 ever starts
        _start("pass", 1)[0].wait(10)
        assert told.called.wait(20)
    [ending] = told.endings
    assert ending.asked == 3 and ending.seen <= 1 and set(ending.statuses) <= {0}


# a launcher of its own for a test that must see no other process start below it: the suite's
# process may start children of its own meanwhile (a thread an earlier test left running)
LAUNCHER = """
import subprocess, sys
children = [subprocess.Popen([sys.executable, "-c", line]) for line in sys.stdin]
for child in children:
    child.kill()
    child.wait()
"""


def test_spawns_start_one_at_a_time_on_a_node() -> None:
    """A second watch on the same launcher waits until the first saw all its processes."""
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdin=subprocess.PIPE,
                                text=True)
    assert launcher.stdin is not None
    try:
        first = SpawnWatch(launcher.pid, 1, Told(), flat=True)
        first.__enter__()
        entered = threading.Event()

        def second() -> None:
            with SpawnWatch(launcher.pid, 1, Told(), flat=True):
                entered.set()

        thread = threading.Thread(target=second)
        thread.start()
        assert not entered.wait(0.5)
        launcher.stdin.write("import time; time.sleep(30)\n")
        launcher.stdin.flush()
        assert entered.wait(10)  # the first one saw its process: the turn passed
        thread.join(10)
        first.__exit__(None, None, None)
    finally:
        launcher.stdin.close()
        assert launcher.wait(20) == 0


# a stand-in for the proxy Hydra starts for a spawned group: named as Hydra's, it starts two
# processes that end at once (no watch can see them) and ends once it has collected them
NEW_PROXY = """
import ctypes, subprocess, sys
ctypes.CDLL(None).prctl(15, b"hydra_pmi_proxy", 0, 0, 0)  # PR_SET_NAME
procs = [subprocess.Popen(["/bin/false"]) for _ in range(2)]
sys.exit(sum(p.wait() for p in procs) and 0)
"""


def test_a_new_proxy_that_ended_ends_the_spawn_even_unseen_processes() -> None:
    """This process stands for ``mpiexec``, a child of it for the node's proxy."""
    old_proxy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    told = Told()
    try:
        with SpawnWatch(os.getpid(), 2, told):
            new_proxy = subprocess.Popen([sys.executable, "-c", NEW_PROXY])
            assert told.called.wait(4)  # well before UNSEEN_AFTER: the proxy said it
            assert new_proxy.wait(10) == 0
    finally:
        old_proxy.kill()
        old_proxy.wait(10)
    [ending] = told.endings
    assert ending.asked == 2 and set(ending.statuses) <= {1}
