"""The garbage collector in a real run: the interchange and rank 0 settle theirs (see
:mod:`rankpool.collector`); the front-end and the worker ranks keep Python's defaults."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import executor

from rankpool.collector import YOUNG

#: a sitecustomize that has every process write its collector's settings as it exits
PROBE = Path(__file__).resolve().parent.parent / "gc_probe"


@pytest.mark.timeout(60)
def test_a_run_settles_the_collector_of_its_interchange_and_rank_0_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every process of a real run, as it exits (see ``tests/gc_probe``): the interchange and
    rank 0 run with the raised threshold and a frozen start-up; the worker ranks (user code)
    and the front-end keep Python's defaults."""
    seen = tmp_path / "seen"
    seen.mkdir()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(PROBE), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("RANKPOOL_TEST_GC_PROBE", str(seen))
    default = subprocess.run([sys.executable, "-c", "import gc; print(*gc.get_threshold())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    ours = (gc.get_threshold(), gc.get_freeze_count())
    with executor(tmp_path / "run", max_ranks=2) as ex:
        assert sum(ex.map(abs, range(-50, 50), chunksize=10)) == 2500
    assert (gc.get_threshold(), gc.get_freeze_count()) == ours  # the user's process: untouched
    roles: dict[str, list[tuple[str, int]]] = {}  # a role's processes (a rank's keeper too)
    for path in seen.iterdir():
        role, threshold, frozen = path.read_text().strip().split("|")[:3]
        roles.setdefault(role, []).append((threshold, int(frozen)))
    assert set(roles) >= {"interchange", "rank 0", "rank 1", "rank 2"}, roles
    for role in ("interchange", "rank 0"):
        assert any(threshold.split()[0] == str(YOUNG) and frozen > 1000
                   for threshold, frozen in roles[role]), (role, roles[role])
    for role in ("rank 1", "rank 2"):
        assert set(roles[role]) == {(default, 0)}, (role, roles[role])
