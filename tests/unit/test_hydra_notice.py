"""Hydra's process-end notice (SIGUSR1): a local block's mpiexec starts with it blocked, and
spawn mode is refused where its children would be exposed to it (no MPI here: a stand-in
named like Hydra's proxy plays the rank's ancestor)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from waiting import wait_for

from rankpool.launchers.local import local_launch
from rankpool.mpi_pool.hydra_notice import PROXY, blocked, notice_blocked, spawn_refusal

SRC = str(Path(__file__).resolve().parents[2] / "src")
#: prints whether SIGUSR1 is blocked in the process that runs it
SAY_BLOCKED = ("from rankpool.mpi_pool.hydra_notice import notice_blocked; import os; "
               "print(notice_blocked(os.getpid()))")
#: prints why spawn mode would be refused onto the hosts in argv[1] from node 'here'
SAY_REFUSAL = ("import sys; from rankpool.mpi_pool.hydra_notice import spawn_refusal; "
               "print(spawn_refusal(sys.argv[1].split(','), 'here'))")


def run(argv: list[str]) -> str:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(argv, capture_output=True, text=True, check=True, env=env,
                          timeout=60).stdout.strip()


def test_blocked_runs_the_program_with_sigusr1_blocked_and_unblock_undoes_it() -> None:
    assert run([sys.executable, "-c", SAY_BLOCKED]) == "False"
    assert run(blocked([sys.executable, "-c", SAY_BLOCKED])) == "True"
    unblocking = ("from rankpool.mpi_pool.hydra_notice import unblock; unblock(); " + SAY_BLOCKED)
    assert run(blocked([sys.executable, "-c", unblocking])) == "False"
    assert not notice_blocked(2 ** 22 + 12345)  # no such process: not blocked


def test_a_local_hydra_mpiexec_is_started_with_the_notice_blocked(tmp_path: Path) -> None:
    hydra = tmp_path / "hydra"
    hydra.mkdir()
    for name in ("mpiexec", "hydra_pmi_proxy"):
        (hydra / name).write_text("#!/bin/sh\n")
        (hydra / name).chmod(0o755)
    line = local_launch(str(hydra / "mpiexec"))
    assert line[:2] == [sys.executable, "-c"] and line[3:] == [str(hydra / "mpiexec"),
                                                               "-disable-auto-cleanup"]
    other = tmp_path / "other" / "mpiexec"  # not Hydra: no notice, nothing blocked
    other.parent.mkdir()
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    assert local_launch(str(other)) == [str(other)]


@pytest.fixture
def proxy(tmp_path: Path) -> str:
    """A Python that runs under the name of Hydra's proxy."""
    link = tmp_path / PROXY
    link.symlink_to(sys.executable)
    return str(link)


def under_proxy(proxy: str, hosts: str, block: bool) -> str:
    """spawn_refusal as a rank below a stand-in proxy (started with SIGUSR1 blocked or not)."""
    child = f"import subprocess, sys; sys.exit(subprocess.call([{sys.executable!r}, '-c', " \
            f"{SAY_REFUSAL!r}, {hosts!r}]))"
    argv = [proxy, "-c", child]
    return run(blocked(argv) if block else argv)


def test_spawn_is_refused_below_a_proxy_whose_mpiexec_left_the_notice_unblocked(
        proxy: str) -> None:
    said = under_proxy(proxy, "here", block=False)
    assert "not started with SIGUSR1 blocked" in said and "MPI_Comm_spawn" in said, said


def test_spawn_onto_other_nodes_is_refused_under_hydra(proxy: str) -> None:
    said = under_proxy(proxy, "here,node7", block=True)
    assert "other nodes (node7)" in said and "(here) only" in said, said


def test_spawn_is_allowed_onto_this_node_when_the_notice_is_blocked(proxy: str) -> None:
    assert under_proxy(proxy, "here", block=True) == "None"


def test_spawn_outside_hydra_is_left_to_the_mpi_library() -> None:
    assert spawn_refusal(["elsewhere"], "here") is None  # pytest runs under no Hydra proxy


# -- spawned applications end one at a time --------------------------------------------------
HOLD_TURN = ("import sys, time; from rankpool.mpi_pool.spawn_endings import ending_turn\n"
             "with ending_turn(int(sys.argv[1])):\n"
             "    print('holding', flush=True); time.sleep(float(sys.argv[2]))\n")


def test_one_process_at_a_time_holds_the_ending_turn_and_dying_releases_it() -> None:
    from rankpool.mpi_pool.spawn_endings import ending_turn
    key = os.getpid() * 1000 + 7
    env = {**os.environ, "PYTHONPATH": SRC}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_TURN, str(key), "60"],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        waiter = subprocess.Popen([sys.executable, "-c", HOLD_TURN, str(key), "0"],
                                  stdout=subprocess.PIPE, text=True, env=env)
        with pytest.raises(subprocess.TimeoutExpired):
            waiter.wait(1.0)  # the turn is taken: it waits
        holder.kill()  # a holder that dies gives the turn back
        assert waiter.communicate(timeout=30)[0].strip() == "holding"
    finally:
        holder.kill()
        holder.wait()
    with ending_turn(key):  # free again, and taken here
        pass


def test_a_turn_held_too_long_is_given_up_with_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The turn's name is public: a process that holds it for ever (another user's) delays a
    spawned application's end by ``TURN_WITHIN`` at most."""
    import socket
    import time

    from rankpool.mpi_pool import spawn_endings
    monkeypatch.setattr(spawn_endings, "TURN_WITHIN", 0.3)
    key = os.getpid() * 1000 + 9
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as squatter:
        squatter.bind(f"\0rankpool-spawn-ending-{key}")
        start = time.monotonic()
        with caplog.at_level("WARNING", logger=spawn_endings.__name__), \
                spawn_endings.ending_turn(key):
            waited = time.monotonic() - start
    assert 0.3 <= waited < 5.0
    assert "was held for 0 s" in caplog.text and "going on without it" in caplog.text


def test_spawned_below_finds_the_spawned_processes_of_the_job(proxy: str) -> None:
    """A stand-in mpiexec (this test's child) with a stand-in proxy below it; two programs
    marked as spawned (one below the proxy, one below a second proxy) and one not."""
    from rankpool.mpi_pool.spawn_endings import spawned_below
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    tree = ("import os, subprocess, sys, time\n"
            f"sleeper = {sleeper!r}\n"
            "spawned = {**os.environ, 'PMI_SPAWNED': '1'}\n"
            f"proxy = subprocess.Popen([{proxy!r}, '-c', 'import subprocess, os, sys; "
            "subprocess.Popen(sys.argv[1:], env={**os.environ, \"PMI_SPAWNED\": \"1\"}); "
            "subprocess.Popen(sys.argv[1:]); import time; time.sleep(60)', *sleeper])\n"
            "other = subprocess.Popen(sleeper, env=spawned)\n"
            "print(proxy.pid, other.pid, flush=True); time.sleep(60)\n")
    job = subprocess.Popen([sys.executable, "-c", tree], stdout=subprocess.PIPE, text=True)
    try:
        assert job.stdout is not None
        proxy_pid, other = map(int, job.stdout.readline().split())
        below = psutil.Process(proxy_pid)
        marked = wait_for(lambda: [p.pid for p in below.children()
                                   if p.environ().get("PMI_SPAWNED") == "1"], timeout=30)
        wait_for(lambda: len(below.children()) == 2, timeout=30)
        assert spawned_below(proxy_pid) == {*marked, other}
    finally:
        for p in psutil.Process(job.pid).children(recursive=True):
            p.kill()
        job.kill()
        job.wait()
