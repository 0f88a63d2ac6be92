"""Load (issue 6): ``bench/load.py`` at a small size in the suite; the full run (1,000,000
no-op and 100,000 multi-rank tasks, about two minutes here) with ``RANKPOOL_SLOW=1``.

The small run checks the mechanics and the invariants that do not need volume: every result
right, nothing outstanding, no communicator leaked. RSS growth is asserted only on the full
run, where the warm-up is long enough for the figure to mean something.

Worker ranks keep the communicators of the rank sets they served lately
(:mod:`rankpool.mpi_pool.comm_cache`): after the run a rank may hold one for every rank set
that contains it, at most the directory's size, less the one the first measurement's own
task already held; never one per task.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from rankpool.mpi_pool.comm_cache import DEFAULT_SIZE

BENCH = Path(__file__).resolve().parents[2] / "bench"
SLOW = os.environ.get("RANKPOOL_SLOW") == "1"

pytestmark = pytest.mark.mpi


def _run(*argv: str) -> dict:
    """``bench/load.py`` with ``argv``; its figures. The ranks import its task functions by
    reference, so ``bench`` goes on the ``PYTHONPATH`` the pool inherits."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCH), saved) if p)
    sys.path.insert(0, str(BENCH))
    try:
        import load
        return load.run(load.parse(list(argv)))
    finally:
        sys.path.remove(str(BENCH))
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved


def _assert_no_leak(r: dict) -> None:
    ranks = r["ranks"]
    kept = min(2 ** (ranks - 1) - 1, DEFAULT_SIZE) - 1  # rank sets of 2+ ranks with this rank
    for before, after in zip(r["free_communicators_before"], r["free_communicators_after"]):
        assert 0 <= before - after <= kept, (r["free_communicators_before"],
                                            r["free_communicators_after"], kept)


@pytest.mark.timeout(120)
def test_small_load_leaks_no_communicator() -> None:
    r = _run("--tasks", "2000", "--wide", "200", "--ranks", "3", "--window", "500")
    assert r["outstanding_at_end"] == 0
    _assert_no_leak(r)
    assert len(r["free_communicators_before"]) == 3 and min(r["free_communicators_before"]) > 1000


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.skipif(not SLOW, reason="set RANKPOOL_SLOW=1 for the full load run")
def test_full_load_holds_memory_flat() -> None:
    r = _run()
    assert r["outstanding_at_end"] == 0
    _assert_no_leak(r)
    assert max(r["rss_growth_mb"].values()) < 50, r["rss_growth_mb"]
