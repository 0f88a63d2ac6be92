"""Fault 6 of issue 6: a pool, or the interchange, paused (SIGSTOP ... SIGCONT) for less than
the heartbeat threshold while tasks are in flight: nothing is lost and nothing runs twice.

Each task drops one mark file per run under a unique name, so runs are counted on disk, not
inferred from the futures.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import fault_tasks as t
import pytest
from helpers import descendants, executor, wait_for, wait_no_new_children

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(90)]

#: a threshold the pause stays well below, even on a loaded 2-core machine
HEARTBEATS = {"heartbeat_period": 0.2, "heartbeat_threshold": 5.0}
PAUSE = 2.0


@pytest.mark.parametrize("paused", ["pool", "interchange"])
def test_pause_shorter_than_the_threshold_loses_nothing_and_repeats_nothing(
        tmp_path: Path, paused: str) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    before = descendants()
    with executor(tmp_path / "run", max_ranks=2, **HEARTBEATS) as ex:
        assert ex.submit(t.square, 3).result(timeout=20) == 9
        if paused == "pool":
            group = ex._blocks.procs["0"].pid  # type: ignore[union-attr]
            stop, cont = (lambda: os.killpg(group, signal.SIGSTOP),
                          lambda: os.killpg(group, signal.SIGCONT))
        else:
            pid = ex.client.proc.pid  # type: ignore[union-attr]
            stop, cont = (lambda: os.kill(pid, signal.SIGSTOP),
                          lambda: os.kill(pid, signal.SIGCONT))
        names = [f"t{i}" for i in range(60)]
        futures = [ex.submit(t.nap, 0.05, str(marks), name) for name in names]
        wide = [ex.requirements(num_ranks=2).submit(t.simulate, i) for i in range(10)]
        wait_for(lambda: len(os.listdir(marks)) >= 4, timeout=20)
        stop()
        try:
            paused_at = time.monotonic()
            wait_for(lambda: time.monotonic() - paused_at > PAUSE, timeout=PAUSE + 5)
        finally:
            cont()
        pids = [f.result(timeout=60) for f in futures]
        assert [f.result(timeout=60) for f in wide] == [2 * i for i in range(10)]
        assert t.runs(str(marks)) == {name: 1 for name in names}
        assert len(set(pids)) == 2  # both ranks of the one block, never replaced
        assert [p["block_id"] for p in ex.pools()] == ["0"]
        assert ex.outstanding() == 0 and ex._broken is None
        assert ex.submit(t.square, 4).result(timeout=20) == 16
    wait_no_new_children(before)
