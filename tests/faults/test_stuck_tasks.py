"""Fault 3 of issue 6 inside a live pool: a rank raises while its peers wait in a collective,
and tasks that block for ever on every rank, with and without ``walltime``.

What the design promises (docs/faults.md): a failed rank's peers get ``grace`` seconds (5 s)
to come back, then the task fails with the rank's exception and a ``StuckRanksError`` note,
and the ranks that never came back get no more work: the pool reports them, the interchange
drains it and its block ends so that a whole one replaces it; a task past its ``walltime``
fails with ``TaskTimeout`` and its ranks are interrupted and freed. A task without ``walltime`` that
never returns holds its ranks until it is cancelled with the executor's shutdown or its pool
is lost: rank 0 keeps heart-beating, so nothing declares the pool lost meanwhile.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import fault_tasks as t
import pytest
from helpers import FAST, descendants, executor, wait_for, wait_no_new_children

from rankpool import Executor, ExecutorShutdown, TaskTimeout
from rankpool.mpi_pool.manager import SLOW_AFTER

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(90)]

THRESHOLD = FAST["heartbeat_threshold"]
GRACE = 5.0  # the pool's default grace period after a rank failed


def test_rank_raising_while_peers_wait_in_a_collective(tmp_path: Path) -> None:
    """Decision 8 end to end: the peer left in the collective is marked stuck, the pool reports
    it, the interchange lists it and drains the pool (its healthy task finishes there), a task
    of the full width waits for the next block instead of going to the degraded one, and the
    degraded block ends its MPI job by itself (its stuck rank could never finish)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    before = descendants()
    with executor(tmp_path / "run", max_ranks=3) as ex:
        start = time.monotonic()
        future = ex.requirements(num_ranks=2).submit(t.raise_on_rank, 1)
        healthy = ex.submit(t.nap, GRACE + 4, str(marks))  # the third rank, past the grace
        exc = future.exception(timeout=GRACE + 20)
        assert isinstance(exc, ValueError) and str(exc) == "rank 1 gives up", repr(exc)
        assert "rank 1 of 2" in str(exc.__cause__)
        notes = "\n".join(getattr(exc, "__notes__", []))
        assert "StuckRanksError" in notes or "stuck" in notes.lower(), notes
        assert time.monotonic() - start >= GRACE - 0.5  # the peers had their grace period
        assert "marked stuck" in (tmp_path / "run" / "pool-0.log").read_text()

        # the interchange lists the stuck rank and no longer counts it: block 0 is draining
        def degraded() -> dict | None:
            return next((p for p in ex.pools() if p["block_id"] == "0" and p["stuck_ranks"]),
                        None)
        info = wait_for(degraded, timeout=10)
        assert len(info["stuck_ranks"]) == 1 and info["widest"] == 2 and info["ranks"] == 2
        assert info["draining"]
        wider = ex.requirements(num_ranks=3).submit(t.simulate, 1)
        # the healthy task finishes on the draining pool; the full-width one on a new block
        assert healthy.result(timeout=20) > 0
        assert wider.result(timeout=60) == 3
        assert [f.result(timeout=20) for f in [ex.submit(t.square, i) for i in range(10)]] \
            == [i * i for i in range(10)]
        [pool] = wait_for(lambda: [p for p in ex.pools() if p["block_id"] != "0"] or None)
        assert pool["stuck_ranks"] == [] and pool["widest"] == 3
        log = (tmp_path / "run" / "pool-0.log").read_text()
        assert "stuck in tasks that never ended; aborting" in log
        assert ex._broken is None
    wait_no_new_children(before)


def test_blocking_forever_with_walltime_times_out_and_frees_the_ranks(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    before = descendants()
    with executor(tmp_path / "run") as ex:
        view = ex.requirements(num_ranks=2, walltime=1.0)
        start = time.monotonic()
        exc = view.submit(t.block_forever, str(marks)).exception(timeout=GRACE + 20)
        assert isinstance(exc, TaskTimeout) and exc.walltime == 1.0, repr(exc)
        assert 1.0 <= time.monotonic() - start < 1.0 + GRACE
        one = ex.requirements(walltime=0.5).submit(t.block_forever, str(marks))
        assert isinstance(one.exception(timeout=GRACE + 20), TaskTimeout)
        assert t.runs(str(marks)) == {"blocked": 3}
        # every rank was interrupted and freed: the whole pool serves again
        assert ex.requirements(num_ranks=2).submit(t.simulate, 3).result(timeout=20) == 6
        assert ex.submit(t.square, 5).result(timeout=20) == 25
        assert ex.pools()[0]["busy_ranks"] == 0
    wait_no_new_children(before)


def test_blocking_forever_without_walltime_ends_only_by_cancel(tmp_path: Path) -> None:
    """Nothing times out a task without ``walltime``: a 2-rank task blocked on both its ranks
    holds them while the third rank serves; once a 1-rank task blocks that one too, what is
    submitted next waits. Interrupting the executor (Ctrl-C) ends every future and returns: the
    waiting ones cancelled, the running ones failed."""
    marks = tmp_path / "marks"
    marks.mkdir()
    before = descendants()
    ex = Executor(max_ranks=3, run_dir=str(tmp_path / "run"), **FAST)
    hung = [ex.requirements(num_ranks=2).submit(t.block_forever, str(marks))]
    wait_for(lambda: t.runs(str(marks)) == {"blocked": 2}, timeout=20)
    # the pool stays alive and serves on its third rank
    assert [f.result(timeout=20) for f in [ex.submit(t.square, i) for i in range(10)]] \
        == [i * i for i in range(10)]
    hung.append(ex.submit(t.block_forever, str(marks)))
    wait_for(lambda: t.runs(str(marks)) == {"blocked": 3}, timeout=20)
    waiting = [ex.submit(t.square, i) for i in range(5)]
    deadline = time.monotonic() + 2 * THRESHOLD  # past the threshold: nobody declares it lost
    wait_for(lambda: time.monotonic() > deadline, timeout=3 * THRESHOLD)
    assert not any(f.done() for f in hung + waiting) and ex._broken is None
    assert [p["block_id"] for p in ex.pools()] == ["0"]

    start = time.monotonic()
    ex.interrupt()  # what Ctrl-C does; shutdown(wait=True) would wait for the running tasks
    assert all(f.cancelled() for f in waiting)
    assert all(isinstance(f.exception(timeout=0), ExecutorShutdown) for f in hung)
    assert time.monotonic() - start < 30
    wait_no_new_children(before)


def test_tasks_submitted_after_a_task_ran_long_go_to_other_ranks(tmp_path: Path) -> None:
    """A rank inside one task for longer than ``SLOW_AFTER`` is held back: 1-rank tasks
    submitted then are not queued behind it, so a hung task without walltime delays none of
    them while another rank can run them."""
    marks = tmp_path / "marks"
    marks.mkdir()
    ex = Executor(max_ranks=2, run_dir=str(tmp_path / "run"), **FAST)
    try:
        hung = ex.submit(t.block_forever, str(marks))
        wait_for(lambda: t.runs(str(marks)) == {"blocked": 1}, timeout=20)
        started = time.monotonic()
        wait_for(lambda: time.monotonic() - started > SLOW_AFTER + 0.5, timeout=10)
        futures = [ex.submit(t.square, i) for i in range(20)]
        assert [f.result(timeout=10) for f in futures] == [i * i for i in range(20)]
        assert not hung.done()
    finally:
        ex.interrupt()  # the hung task runs on: shutdown(wait=True) would wait for it


@pytest.mark.xfail(reason="known limit: 1-rank tasks queued on a rank behind a task before it "
                          "has run SLOW_AFTER seconds wait with it (docs/reliability.md)",
                   raises=AssertionError, strict=True)
def test_tasks_queued_behind_a_task_that_turns_out_to_hang_run_elsewhere(tmp_path: Path) -> None:
    """What should happen: a hung 1-rank task without walltime delays no other task while
    another rank is idle. Today the tasks placed behind it before it ran long wait with it.

    The pool is paused (SIGSTOP, well within the heartbeat threshold) while the interchange
    sends it the hung task and then the next ones, so that rank 0 takes them at once, as it
    does whenever they arrive within ``SLOW_AFTER`` of each other, and queues some of them
    behind the hung one (it spreads them over the ranks holding fewest tasks). Without the
    pause, how they trickle in decides: one at a time, each finishes on the other rank before
    the next arrives."""
    marks = tmp_path / "marks"
    marks.mkdir()
    ex = Executor(max_ranks=2, run_dir=str(tmp_path / "run"), heartbeat_period=0.2,
                  heartbeat_threshold=5.0)
    try:
        assert ex.submit(t.square, 2).result(timeout=30) == 4  # the pool is up
        group = ex._blocks.procs["0"].pid  # the block's mpiexec leads its own process group
        os.killpg(group, signal.SIGSTOP)
        try:
            ex.submit(t.block_forever, str(marks))
            # sent to the pool first (a lone task travels on a socket of its own, so the next
            # ones could otherwise overtake it on the way to the interchange)
            wait_for(lambda: ex.pools()[0]["tasks"] == 1, timeout=10)
            futures = [ex.submit(t.square, i) for i in range(20)]
            # and at least two more: rank 0 will place one of them on the idle rank, the
            # other behind the hung task
            wait_for(lambda: ex.pools()[0]["tasks"] >= 3, timeout=10)
        finally:
            os.killpg(group, signal.SIGCONT)
        deadline = time.monotonic() + 3
        wait_for(lambda: all(f.done() for f in futures) or time.monotonic() > deadline,
                 timeout=10)
        assert all(f.done() for f in futures), \
            f"{sum(not f.done() for f in futures)} of 20 tasks wait behind the hung one"
    finally:
        ex.interrupt()  # the hung task runs on: shutdown(wait=True) would wait for it
