"""A clean stop of Slurm blocks: the job ends by itself, not by ``scancel``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import slurm_apps as apps
from slurm_helpers import executor, provider, squeue
from waiting import wait_for

from rankpool.launchers import MpiexecLauncher, SrunLauncher

pytestmark = pytest.mark.timeout(120)

LAUNCHERS = {
    # the fake nodes have this machine's 2 cores: the manager and one worker each
    "srun": lambda: SrunLauncher(ranks_per_node=2, mpi="pmi2"),
    "mpiexec": lambda: MpiexecLauncher(ranks_per_node=2),
}


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_cleanup_ends_the_job_by_itself(load: Any, tmp_path: Path, name: str) -> None:
    """dfk.cleanup() stops the pool and its job ends by itself: the job's stderr has no
    'CANCELLED', 'Terminated' or error line from Slurm, srun or Hydra."""
    dfk = load(executor(provider(LAUNCHERS[name](), nodes_per_block=1)))
    ex = dfk.executors["rpslurm"]
    assert apps.where().result(timeout=60)["block"] == "0"
    job = ex.blocks_to_job_id["0"]
    dfk.cleanup()
    wait_for(lambda: job not in squeue(), timeout=30)
    [stderr] = list((tmp_path / "runinfo").rglob("submit_scripts/parsl.rpslurm.block-0.*.stderr"))
    text = stderr.read_text()
    for bad in ("CANCELLED", "Terminated", "error", "assert", "Exited with exit code"):
        assert bad not in text, text
