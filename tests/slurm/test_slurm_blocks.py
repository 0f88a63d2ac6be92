"""ExtremeScaleExecutor blocks as real Slurm jobs: one MPI pool across fake nodes n1 and n2.

Each fake node has 2 CPUs, and the blocks ask for what their launch uses: a block of 2 nodes x
2 ranks per node is a job of ``--ntasks-per-node=2`` and one pool of 4 ranks: the manager and
1 worker on n1, 2 workers on n2, on nodes shared with other jobs (``exclusive=False``) or not,
with no ``--overcommit``. A 3-rank task cannot fit on one node and spans both; a 2-rank task
runs on the node that holds two workers. Then scaling: out to two 1-node blocks and in again
(the jobs leave ``squeue``), and a block whose job ends (cancelled, or at its walltime) fails
its task with ``ManagerLost`` and Parsl's retry runs it on a new block.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import slurm_apps as apps
from slurm_helpers import executor, provider, squeue
from waiting import wait_for

from rankpool import ManagerLost
from rankpool.launchers import MpiexecLauncher, SrunLauncher

pytestmark = pytest.mark.timeout(120)

LAUNCHERS = {
    "srun": lambda: SrunLauncher(ranks_per_node=2, mpi="pmi2"),
    # Hydra's mpiexec starts one proxy per node with srun by itself inside the allocation
    "mpiexec": lambda: MpiexecLauncher(ranks_per_node=2),
}


def _record(errors: list[BaseException], error: BaseException) -> float:
    """A Parsl retry handler that notes each failure; every retry costs 1."""
    errors.append(error)
    return 1.0


def _hang_on_block_0(load: Any, tmp_path: Path,
                     **provider_options: Any) -> tuple[Any, list[BaseException], Any, str]:
    """A one-node block running a task that hangs on its first try (Parsl retries once):
    the executor, the errors retried, the task's future and block 0's job id."""
    errors: list[BaseException] = []
    launcher = SrunLauncher(ranks_per_node=2, mpi="pmi2")
    dfk = load(executor(provider(launcher, nodes_per_block=1, **provider_options)), retries=1,
               retry_handler=lambda e, record: _record(errors, e))
    ex = dfk.executors["rpslurm"]
    marker = str(tmp_path / "marker")
    future = apps.hang_first_try(marker)
    wait_for(lambda: os.path.exists(marker), timeout=60)
    return ex, errors, future, ex.blocks_to_job_id["0"]


@pytest.mark.parametrize("name,exclusive", [("srun", False), ("srun", True),
                                            ("mpiexec", False)])
def test_one_pool_spans_two_nodes(load: Any, name: str, exclusive: bool) -> None:
    launcher = LAUNCHERS[name]()
    dfk = load(executor(provider(launcher, nodes_per_block=2, exclusive=exclusive)))
    ex = dfk.executors["rpslurm"]
    assert ex.workers_per_node == 1.5 and ex.ranks_per_node == 2  # 3 workers on 2 nodes
    [pool] = wait_for(lambda: ex.connected_managers(), timeout=60)
    assert (pool["ranks"], pool["node_ranks"], pool["widest"]) == (3, [1, 2], 3)
    job = ex.blocks_to_job_id["0"]
    assert squeue()[job][1:] == ("RUNNING", "n[1-2]")

    wide = apps.where(parsl_resource_specification={"num_ranks": 3, "results": "all"})
    ranks = wide.result(timeout=60)
    assert [r["rank"] for r in ranks] == [0, 1, 2]
    assert {r["node"] for r in ranks} == {"n1", "n2"}  # no node holds 3 workers
    assert {r["job"] for r in ranks} == {job} and {r["block"] for r in ranks} == {"0"}

    pair = apps.where(parsl_resource_specification={"num_ranks": 2, "results": "all"})
    assert {r["node"] for r in pair.result(timeout=60)} == {"n2"}  # one node when one fits


def test_scale_out_to_two_blocks_and_in_again(load: Any, tmp_path: Path) -> None:
    launcher = SrunLauncher(ranks_per_node=2, mpi="pmi2")
    prov = provider(launcher, nodes_per_block=1, init_blocks=1, max_blocks=2, min_blocks=0)
    dfk = load(executor(prov), max_idletime=2.0)
    ex = dfk.executors["rpslurm"]
    assert ex.workers_per_node == 1  # 2 ranks per node: the manager and 1 worker
    go = str(tmp_path / "go")
    # 4 ranks' worth for blocks of 1 worker: block 0's pool takes what it can hold (1 running,
    # 1 prefetched); block 1's takes the rest when it connects
    started = [str(tmp_path / f"s{i}") for i in range(4)]
    futures = [apps.hold_until(s, go) for s in started]
    wait_for(lambda: len(ex.connected_blocks()) == 2, timeout=60)
    running = wait_for(lambda: [Path(s).read_text() for s in started if os.path.exists(s)]
                       if sum(map(os.path.exists, started)) >= 2 else None, timeout=60)
    assert sorted(running) == ["0", "1"]  # both blocks' workers busy at once
    jobs = dict(ex.blocks_to_job_id)
    assert len(jobs) == 2  # max_blocks
    listed = squeue()
    assert {listed[j][1] for j in jobs.values()} == {"RUNNING"}
    assert {listed[j][2] for j in jobs.values()} == {"n1", "n2"}  # a node each
    Path(go).touch()
    done = [f.result(timeout=30) for f in futures]
    assert {d["block"] for d in done} == {"0", "1"} and {d["node"] for d in done} == {"n1", "n2"}

    # idle for max_idletime: Parsl's strategy scales in, the executor drains and cancels
    wait_for(lambda: not set(jobs.values()) & set(squeue()), timeout=60)
    wait_for(lambda: all(ex.status()[b].terminal for b in jobs), timeout=10)
    assert ex.connected_blocks() == []


def test_ended_job_fails_its_task_and_the_retry_runs_on_a_new_block(load: Any,
                                                                    tmp_path: Path) -> None:
    """A job that ends under a running task (here ``scancel``, as an operator would)."""
    ex, errors, future, first = _hang_on_block_0(load, tmp_path)
    subprocess.run(["scancel", first], check=True, timeout=15)
    retried = future.result(timeout=90)
    [lost] = errors
    assert isinstance(lost, ManagerLost) and lost.block_id == "0"
    assert retried["block"] == "1" and retried["job"] == ex.blocks_to_job_id["1"] != first


@pytest.mark.timeout(200)
def test_block_at_its_walltime_fails_its_task_and_the_retry_succeeds(load: Any,
                                                                     tmp_path: Path) -> None:
    """The longest test here, 65-100 s: Slurm's shortest time limit is one minute, and
    slurmctld enforces time limits every 30 s."""
    ex, errors, future, first = _hang_on_block_0(load, tmp_path, walltime="00:01:00")
    retried = future.result(timeout=240)  # the time limit ends job 0; block 1 runs the retry
    [lost] = errors
    assert isinstance(lost, ManagerLost) and lost.block_id == "0"
    assert retried["block"] == "1" and retried["job"] != first
