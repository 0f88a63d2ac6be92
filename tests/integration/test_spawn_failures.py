"""Spawn mode under Hydra when the spawned program never reaches ``MPI_Init`` (it exits at its
top, or fails to import): MPICH's ``MPI_Comm_spawn`` would wait for it for ever. The task fails
with :class:`~rankpool.SpawnedProgramLost` (a :class:`~rankpool.WorkerLost`: its parent rank
is ended, the only way out of the call), within seconds, and the pool serves on with its other
ranks; nothing of the dead spawn is left."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import executor, pool_tree, wait_for
from test_mpi_applications import PY_WORLD

from rankpool import SpawnedProgramLost, WorkerLost, run_mpi

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(150)]

#: seconds within which a spawn whose program ended before MPI_Init must fail
WITHIN = 30


def square(x: int) -> int:
    return x * x


def _left(ex: Any, word: str) -> list[Any]:
    """Processes of the pool whose command line has ``word``."""
    found = []
    for proc in pool_tree(ex):
        try:
            if word in proc.cmdline():
                found.append(proc)
        except Exception:  # gone while looked at
            continue
    return found


def test_spawned_programs_that_end_before_mpi_init_fail_their_task_only(tmp_path: Path) -> None:
    """A Python program that exits at its top, one that fails to import, and a program that
    ends within a millisecond (``false``: no watch can see its processes, only their proxy)."""
    exits = tmp_path / "exits.py"
    exits.write_text("import sys\nsys.exit(3)\n")
    imports = tmp_path / "imports.py"
    imports.write_text("import rankpool_test_no_such_module  # noqa\n")
    false = shutil.which("false") or "/bin/false"
    cases = [([sys.executable, str(exits)], 3), ([sys.executable, str(imports)], 1),
             ([false], 1)]
    with executor(tmp_path / "run", max_ranks=6) as ex:  # 3 of 6 lost: the pool serves on
        lost = []
        for argv, code in cases:
            future = ex.requirements(num_ranks=2).submit(run_mpi, argv, mode="spawn")
            exc = future.exception(timeout=WITHIN)
            assert isinstance(exc, SpawnedProgramLost), repr(exc)
            assert isinstance(exc, WorkerLost)
            assert exc.program == argv[0] and exc.count == 2
            assert set(exc.exit_codes) <= {code}, exc.exit_codes  # those seen before reaped
            text = str(exc)
            assert argv[0] in text and "before MPI_Init" in text, text
            assert f"worker rank {exc.rank}" in text and "mode='launcher'" in text, text
            lost.append(exc.rank)
            wait_for(lambda s=argv[-1]: not _left(ex, s), timeout=10)
        assert ex.submit(square, 4).result(timeout=60) == 16
        run = ex.requirements(num_ranks=2).submit(run_mpi, PY_WORLD).result(timeout=120)
        assert run.returncode == 0 and run.stdout.count("size 2") == 2, run.stdout
        [pool] = ex.pools()
        assert sorted(pool["lost_ranks"]) == sorted(lost), pool


def test_a_failing_spawn_among_spawns_side_by_side_costs_only_its_task(tmp_path: Path) -> None:
    """Healthy applications spawned while one crashes before MPI_Init (SIGSEGV): spawns start
    one at a time on a node, so each one's watch knows its own processes; the failed one's
    parent ends in the node's ending turn, so no notice of its end reaches a group that has
    just ended."""
    crashes = tmp_path / "crashes.py"
    crashes.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    with executor(tmp_path / "run", max_ranks=4) as ex:
        healthy = [ex.submit(run_mpi, PY_WORLD, mode="spawn") for _ in range(3)]
        bad = ex.requirements(num_ranks=2).submit(run_mpi, [sys.executable, str(crashes)],
                                                  mode="spawn")
        healthy += [ex.submit(run_mpi, PY_WORLD, mode="spawn") for _ in range(5)]
        assert isinstance(bad.exception(timeout=WITHIN + 60), SpawnedProgramLost)
        assert [f.result(timeout=120).returncode for f in healthy] == [0] * len(healthy)
        [pool] = ex.pools()
        assert pool["lost_ranks"] == [bad.exception().rank], pool  # type: ignore[union-attr]
        assert ex.submit(square, 5).result(timeout=60) == 25
