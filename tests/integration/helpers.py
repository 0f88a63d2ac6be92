"""Helpers shared by the ``rankpool.Executor`` integration tests.

Every wait is bounded: :func:`wait_for` polls a condition with a deadline, and processes are
awaited with timeouts. Nothing here sleeps to synchronise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
from waiting import wait_for  # noqa: E402

from rankpool import Executor
from rankpool.launchers.mpiexec import find_mpiexec

HERE = Path(__file__).resolve().parent

# The ranks unpickle the task functions of the test modules by reference, so they must import
# them from this directory: put it on PYTHONPATH before any pool starts (pools started later,
# replacements included, inherit it), as tests/parsl/conftest.py does for its apps.
if str(HERE) not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)

#: short heartbeats, so that losses are noticed within a couple of seconds
FAST: dict[str, float] = {"heartbeat_period": 0.2, "heartbeat_threshold": 2.0}


@contextmanager
def executor(run_dir: Path, **kwargs: Any) -> Iterator[Executor]:
    """An Executor with fast heartbeats and its run dir under ``run_dir``, always shut down."""
    options = {**FAST, "max_ranks": 2, "run_dir": str(run_dir), **kwargs}
    ex = Executor(**options)
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


# -- processes ------------------------------------------------------------------------------------
def alive(proc: psutil.Process) -> bool:
    """Whether a process still runs (a zombie waiting for its parent does not)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def descendants() -> set[int]:
    """Pids of the live processes below this one (recursive)."""
    return {p.pid for p in psutil.Process().children(recursive=True) if alive(p)}


def tree(pid: int) -> list[psutil.Process]:
    """A process and everything below it, as psutil handles (kept valid after reparenting)."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def pool_tree(ex: Executor) -> list[psutil.Process]:
    """Every process of the executor's local blocks: mpiexec, its proxy and the ranks."""
    assert ex._blocks is not None
    procs: list[psutil.Process] = []
    for popen in ex._blocks.procs.values():
        procs += tree(popen.pid)
    return procs


def wait_gone(procs: Iterable[psutil.Process], timeout: float) -> None:
    """Wait until every process of ``procs`` has exited."""
    procs = list(procs)
    wait_for(lambda: not any(alive(p) for p in procs), timeout=timeout)


def wait_no_new_children(baseline: set[int], timeout: float = 20.0) -> None:
    """Wait until no descendant of this process exists beyond those in ``baseline``."""
    wait_for(lambda: not (descendants() - baseline), timeout=timeout, interval=0.05)


# -- pools started by hand ------------------------------------------------------------------------
def start_pool(address: str, block_id: str, workers: int, log_dir: Path, *,
               code: str | None = None, extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """Start ``mpiexec -n workers+1 python -m rankpool.mpi_pool`` (or ``python -c code``)
    against ``address``, in a session of its own, its output in ``log_dir/pool-<id>.err``."""
    entry = ["-c", code] if code is not None else ["-m", "rankpool.mpi_pool"]
    argv = [find_mpiexec(), "-n", str(workers + 1), sys.executable, *entry,
            "--interchange", address, "--block-id", block_id,
            "--heartbeat-period", str(FAST["heartbeat_period"]),
            "--heartbeat-threshold", str(FAST["heartbeat_threshold"]), *extra]
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"pool-{block_id}.out", "wb") as out, \
            open(log_dir / f"pool-{block_id}.err", "wb") as err:
        return subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """Wait for ``proc`` to exit; kill its session if it does not in time; its exit code."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired as exc:
        for p in reversed(tree(proc.pid)):
            try:
                p.kill()
            except psutil.Error:
                pass
        proc.wait(5)
        raise AssertionError(f"{proc.args!r} did not exit within {timeout} s; killed") from exc
