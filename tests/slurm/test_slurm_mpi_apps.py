"""A Parsl MPI-mode bash app on a Slurm block: ExtremeScaleExecutor + SlurmProvider +
SrunLauncher over fake nodes n1 and n2. The task's ranks are held in the pool's own job step;
``$PARSL_MPI_PREFIX`` is an ``srun`` step inside it (``--overlap``) naming both nodes, and the
program runs one process on each."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import slurm_apps as apps
from slurm_helpers import executor, provider
from waiting import wait_for

from rankpool.launchers import SrunLauncher

pytestmark = pytest.mark.timeout(150)

SAID = re.compile(r"rank (\d+) size (\d+) host (\S+?) pid")


def test_bash_app_on_two_nodes_runs_one_process_per_node(load: Any, tmp_path: Path) -> None:
    launcher = SrunLauncher(ranks_per_node=2, mpi="pmi2")  # the job holds 2 tasks per node
    dfk = load(executor(provider(launcher, nodes_per_block=2)))
    ex = dfk.executors["rpslurm"]
    wait_for(lambda: ex.connected_managers(), timeout=60)
    out, err = tmp_path / "world.out", tmp_path / "world.err"
    spec = {"num_nodes": 2, "ranks_per_node": 1}
    done = apps.world(parsl_resource_specification=spec, stdout=str(out), stderr=str(err))
    assert done.result(timeout=90) == 0, err.read_text()
    text = out.read_text()
    prefix = re.search(r"prefix: (.*)", text).group(1)  # type: ignore[union-attr]
    assert prefix.startswith("srun --overlap --ntasks 2 --nodes 2 --ntasks-per-node 1 ")
    assert "--nodelist n1,n2" in prefix or "--nodelist n2,n1" in prefix
    ranks = sorted((int(r), int(s), host) for r, s, host in SAID.findall(text))
    assert [(r, s) for r, s, _ in ranks] == [(0, 2), (1, 2)]
    assert sorted(host for _, _, host in ranks) == ["n1", "n2"]  # one process on each node
