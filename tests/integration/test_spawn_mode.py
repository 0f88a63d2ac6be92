"""Spawn mode under Hydra: spawned programs are safe from Hydra's process-end notice (SIGUSR1,
sent to every process of the job whenever one ends, which kills a program not yet past
``MPI_Init`` and leaves its parent in ``MPI_Comm_spawn`` for ever), and spawn mode is refused
at once where they would not be."""

from __future__ import annotations

import signal
import sys
from concurrent.futures import wait
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import executor, pool_tree, wait_for
from test_mpi_applications import PY_WORLD, c_world  # noqa: F401 (a fixture)

from rankpool import SpawnUnsupported, run_mpi
from rankpool.launchers.mpiexec import find_mpiexec
from rankpool.mpi_pool.hydra_notice import notice_blocked

pytestmark = pytest.mark.mpi


def square(x: int) -> int:
    return x * x


def test_spawned_programs_start_with_the_notice_blocked_and_the_pool_takes_it(
        tmp_path: Path) -> None:
    with executor(tmp_path / "run", max_ranks=2) as ex:
        future = ex.requirements(num_ranks=2).submit(
            run_mpi, PY_WORLD + ["0", "3", str(tmp_path)], mode="spawn")
        children = wait_for(lambda: len(found := [
            p for p in psutil.process_iter(["cmdline"])
            if str(tmp_path) in (p.info["cmdline"] or [])]) == 2 and found, timeout=60)
        assert all(notice_blocked(p.pid) for p in children), children
        ranks = [p for p in pool_tree(ex) if p.cmdline()[1:3] == ["-m", "rankpool.mpi_pool"]]
        assert ranks and not any(notice_blocked(p.pid) for p in ranks)
        assert notice_blocked(ex._blocks.procs["0"].pid)  # type: ignore[union-attr]
        assert future.result(timeout=120).returncode == 0


def test_concurrent_spawns_all_finish(tmp_path: Path) -> None:
    """Applications spawned side by side, so that one ends while another starts: each one's
    end sends SIGUSR1 to every process of the job, the starting ones included."""
    with executor(tmp_path, max_ranks=4) as ex:
        futures = [ex.requirements(num_ranks=1 + i % 2).submit(run_mpi, PY_WORLD, mode="spawn")
                   for i in range(16)]
        done, stalled = wait(futures, timeout=80)
        assert not stalled, f"{len(stalled)} of 16 spawned applications never finished"
        assert all(f.result().returncode == 0 for f in done)


def test_short_spawned_applications_ending_together_leave_the_pool_alive(
        tmp_path: Path, c_world: str) -> None:  # noqa: F811 (the fixture imported above)
    """Short C applications spawned side by side end within moments of each other: Hydra's
    notice of one's end, written to another whose group has just closed, fails, and mpiexec
    then ends the whole pool unless spawned applications end one at a time."""
    with executor(tmp_path, max_ranks=8) as ex:
        futures = [ex.requirements(num_ranks=(1, 2, 4)[i % 3]).submit(run_mpi, [c_world],
                                                                      mode="spawn")
                   for i in range(180)]
        done, stalled = wait(futures, timeout=100)
        assert not stalled, f"{len(stalled)} of 180 spawned applications never finished"
        assert all(f.result().returncode == 0 for f in done)


@pytest.fixture
def unblocking_mpiexec(tmp_path: Path) -> str:
    """Hydra's mpiexec behind a stand-in that undoes the notice's block, as a pool started by
    a hand-written job script would have it."""
    real = find_mpiexec()
    here = tmp_path / "hydra"
    here.mkdir()
    (here / "hydra_pmi_proxy").symlink_to(Path(real).parent / "hydra_pmi_proxy")
    stand_in = here / "mpiexec"
    stand_in.write_text(f"#!{sys.executable}\nimport os, signal, sys\n"
                        f"signal.pthread_sigmask(signal.SIG_UNBLOCK, [{int(signal.SIGUSR1)}])\n"
                        f"os.execv({real!r}, [{real!r}, *sys.argv[1:]])\n")
    stand_in.chmod(0o755)
    return str(stand_in)


def test_spawn_is_refused_at_once_where_the_notice_is_not_blocked(
        tmp_path: Path, unblocking_mpiexec: str) -> None:
    with executor(tmp_path / "run", max_ranks=2, mpiexec=unblocking_mpiexec) as ex:
        exc: Any = ex.requirements(num_ranks=2).submit(run_mpi, PY_WORLD,
                                                       mode="spawn").exception(timeout=60)
        assert isinstance(exc, SpawnUnsupported), repr(exc)
        assert "SIGUSR1" in str(exc) and "mode='launcher'" in str(exc), str(exc)
        assert ex.requirements(num_ranks=2).submit(run_mpi, PY_WORLD).result(
            timeout=120).returncode == 0
        assert ex.submit(square, 4).result(timeout=60) == 16
