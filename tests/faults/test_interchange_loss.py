"""Faults 4 and 5 of issue 6: the interchange killed under the front-end, and the submitting
process killed under the interchange and its pools.

4: every pending future fails within twice the heartbeat threshold with ``BrokenPool``
naming the interchange, ``submit`` raises, shutdown returns, and the pools leave by
themselves without starting anything more. 5: the interchange notices its parent is gone
(or the front-end silent) and stops its pools; no process of the run is left (psutil).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import fault_tasks as t
import psutil
import pytest
from helpers import (
    FAST,
    alive,
    descendants,
    pool_tree,
    wait_for,
    wait_gone,
    wait_no_new_children,
)

from rankpool import BrokenPool, Executor
from rankpool.shm import run as shm_run

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(90)]

THRESHOLD = FAST["heartbeat_threshold"]


def test_interchange_killed_fails_everything_promptly(tmp_path: Path) -> None:
    before = descendants()
    ex = Executor(max_ranks=2, run_dir=str(tmp_path), **FAST)
    try:
        assert ex.submit(t.square, 3).result(timeout=20) == 9
        pools = pool_tree(ex)
        block = ex._blocks.procs["0"]  # type: ignore[union-attr]
        running = [ex.submit(t.nap, 1.0) for _ in range(4)]  # two run, two wait on the pool
        wait_for(lambda: ex.pools()[0]["busy_ranks"] == 2, timeout=10)
        queued = [ex.requirements(num_ranks=2).submit(t.simulate, 1) for _ in range(3)]

        start = time.monotonic()
        ex.client.proc.kill()  # type: ignore[union-attr]
        for f in running + queued:
            exc = f.exception(timeout=2 * THRESHOLD)
            assert isinstance(exc, BrokenPool), repr(exc)
            assert "interchange" in str(exc) and "exited" in str(exc)
        assert time.monotonic() - start < 2 * THRESHOLD
        with pytest.raises(BrokenPool, match="interchange"):
            ex.submit(t.square, 3)
        with pytest.raises(BrokenPool):
            ex.requirements(num_ranks=2).submit(t.simulate, 1)

        # the pool leaves by itself once the interchange is silent past its threshold (after
        # finishing what it held: here at most 2 s of naps)
        wait_gone(pools, timeout=THRESHOLD + 2 * 1.0 + 8)
        assert block.wait(5) == 0
    finally:
        start = time.monotonic()
        ex.shutdown()
        assert time.monotonic() - start < 5
    wait_no_new_children(before)


def test_pool_starts_no_queued_task_after_losing_the_interchange(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    ex = Executor(max_ranks=2, run_dir=str(tmp_path / "run"), heartbeat_period=0.2,
                  heartbeat_threshold=1.0)
    try:
        pools = pool_tree(ex)
        futures = [ex.submit(t.nap, 2.5, str(marks)) for _ in range(4)]
        wait_for(lambda: len(os.listdir(marks)) == 2, timeout=20)
        ex.client.proc.kill()  # type: ignore[union-attr]
        for f in futures:
            assert isinstance(f.exception(timeout=5), BrokenPool)
        wait_gone(pools, timeout=20)
        assert len(os.listdir(marks)) == 2, "tasks started after the interchange was lost"
    finally:
        ex.shutdown()


#: the submitting process: an Executor with work in flight, then it waits to be killed
_SUBMITTER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from rankpool import Executor
    import fault_tasks as t
    ex = Executor(max_ranks=2, run_dir=sys.argv[1], heartbeat_period=0.2, heartbeat_threshold=2)
    assert ex.submit(t.square, 3).result(timeout=30) == 9
    futures = [ex.submit(t.nap, 0.5) for _ in range(50)]
    wide = [ex.requirements(num_ranks=2).submit(t.simulate, 1) for _ in range(5)]
    big = ex.submit(len, np.ones(1 << 18))  # its argument waits in a shared-memory segment
    print("READY", ex._plane.prefix, flush=True)
    time.sleep(600)
""")


def test_submitting_process_killed_leaves_no_process_behind(tmp_path: Path) -> None:
    before = descendants()
    proc = subprocess.Popen([sys.executable, "-c", _SUBMITTER, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        ready, prefix = proc.stdout.readline().split()
        assert ready == "READY"
        assert [n for n in os.listdir(shm_run.SHM_DIR) if n.startswith(prefix)]
        run = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in run)
        assert "rankpool.interchange" in names and "rankpool.mpi_pool" in names, names
        proc.kill()
        proc.wait(10)
        # the interchange sees its parent gone at its next heartbeat and stops the pool, which
        # finishes or drops what it holds; everything exits by itself
        wait_gone(run, timeout=3 * THRESHOLD + 10)
        assert not [p for p in run if alive(p)]
        log = (tmp_path / "interchange.log").read_text()
        assert "parent process" in log or "front-end" in log, log[-2000:]
        # nor any file in /dev/shm: the interchange removed the front-end's, the ranks theirs
        assert not [n for n in os.listdir(shm_run.SHM_DIR) if n.startswith(prefix)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    wait_no_new_children(before)
