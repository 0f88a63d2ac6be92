"""Job-script mode against a real Slurm: the user's own ``sbatch`` scripts start the pools.

The executor runs with ``managed=False``: it submits nothing. One job script runs the
``pool_command.sh`` the executor wrote into its run directory under ``srun`` (2 nodes x 3
ranks, the block id taken from ``SLURM_JOB_ID``); a second runs the command line that
:meth:`pool_command` returns. The connections are encrypted, as they are by default off
loopback, so the pools find the run's keys through ``--server-key``. Both pools attach, run
tasks, and leave when the executor shuts down, which ends both jobs. A job that Slurm's PMI2
server fails at ``MPI_Init`` (:data:`PMI2_GARBLED`, in its output) is cancelled and submitted
again with MPICH's OFI netmod (:data:`OFI`), up to three times: in some full runs of the suite
every 2-node job with UCX's long addresses failed so.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import slurm_apps as apps
import zmq
from slurm_helpers import JOB_PREFIX, executor, provider, squeue
from waiting import wait_for

from rankpool.launchers import SrunLauncher

pytestmark = pytest.mark.timeout(420)


#: Slurm 22.05's PMI2 server, seen now and then when it takes MPICH's long start-up values
#: (the UCX addresses of the ranks) in pieces: the job's MPI_Init fails before rankpool runs
PMI2_GARBLED = "mpi/pmi2: value not properly terminated"
#: what a job submitted again after PMI2_GARBLED sets: MPICH's OFI netmod (TCP)
OFI = "MPIR_CVAR_CH4_NETMOD=ofi FI_PROVIDER=tcp"


def sbatch(script: Path, text: str) -> str:
    """Submit a job script; return the job id."""
    script.write_text(text)
    out = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return out.strip().split(";")[0]


def test_job_scripts_attach_pools_to_an_unmanaged_executor(load: Any, tmp_path: Path) -> None:
    # the provider only describes the jobs' shape (for submit's checks); nothing is submitted
    shape = provider(SrunLauncher(ranks_per_node=3), nodes_per_block=2)
    # encrypted, as off loopback by default: the pools read the run's keys (--server-key)
    dfk = load(executor(shape, managed=False, encrypted=zmq.has("curve")))
    ex = dfk.executors[JOB_PREFIX]
    run_dir = Path(ex.run_dir) / ex.label
    script = run_dir / "pool_command.sh"
    assert script.exists() and (run_dir / "interchange.json").exists()
    assert ("--server-key" in ex.pool_command("x")) == zmq.has("curve")
    assert "srun --ntasks 6 --ntasks-per-node 3 --nodes 2 --kill-on-bad-exit=0 sh " \
        in script.read_text()
    assert ex.blocks_to_job_id == {}

    # the fake nodes have fewer cores than 3 ranks: the jobs overcommit, and sbatch then
    # refuses --ntasks-per-node, so the job asks for 6 tasks and srun places 3 per node
    whole_script = f"""#!/bin/bash
#SBATCH --job-name={JOB_PREFIX}-jobscript
#SBATCH --nodes=2
#SBATCH --ntasks=6
#SBATCH --overcommit
#SBATCH --time=5
#SBATCH --output={tmp_path}/whole.out
srun --mpi=pmi2 --ntasks-per-node=3 sh {shlex.quote(str(script))}
"""
    by_hand_script = f"""#!/bin/bash
#SBATCH --job-name={JOB_PREFIX}-by-hand
#SBATCH --nodes=1
#SBATCH --ntasks=2
#SBATCH --overcommit
#SBATCH --time=5
#SBATCH --output={tmp_path}/by_hand.out
srun --mpi=pmi2 {ex.pool_command("by-hand")}
"""
    # name -> [job id, script, its output]
    jobs = {name: [sbatch(tmp_path / f"{name}.sh", text), text, tmp_path / f"{name}.out"]
            for name, text in (("whole", whole_script), ("by_hand", by_hand_script))}

    def garbled() -> list[str]:
        return [name for name, (_, _, out) in jobs.items()
                if out.exists() and PMI2_GARBLED in out.read_text()]

    for attempt in range(3):
        state = wait_for(lambda: "pools" if len(ex.connected_managers()) == 2 else garbled(),
                         timeout=60)
        if state == "pools":
            break
        # Slurm's PMI2 server broke MPI_Init's exchange: the job's ranks never start (some
        # wait in MPI_Init for ever); cancel it and submit it again, with MPICH's OFI netmod,
        # whose addresses are short (the garbled requests are pieces of UCX's long ones)
        for name in state:
            job, text, out = jobs[name]
            subprocess.run(["scancel", job], timeout=30, check=False)
            wait_for(lambda job=job: job not in squeue(), timeout=60)
            out.rename(tmp_path / f"{name}-pmi2-{attempt}.out")
            text = text.replace("\nsrun ", f"\nexport {OFI}\nsrun ", 1)
            jobs[name][0], jobs[name][1] = sbatch(tmp_path / f"{name}.sh", text), text
    whole, by_hand = jobs["whole"][0], jobs["by_hand"][0]
    pools = wait_for(lambda: {p["block_id"]: p["node_ranks"] for p in ex.connected_managers()}
                     if len(ex.connected_managers()) == 2 else None, timeout=60)
    assert pools == {whole: [2, 3], "by-hand": [1]}

    wide = apps.where(parsl_resource_specification={"num_ranks": 4, "results": "all"})
    ranks = wide.result(timeout=60)
    assert {r["node"] for r in ranks} == {"n1", "n2"}  # only the 2-node job's pool holds it
    assert {(r["job"], r["block"]) for r in ranks} == {(whole, whole)}
    ones = [apps.where().result(timeout=60) for _ in range(4)]
    assert {o["job"] for o in ones} <= {whole, by_hand}

    dfk.cleanup()  # the interchange stops both pools: both jobs end by themselves
    wait_for(lambda: not {whole, by_hand} & set(squeue()), timeout=60)
    assert "Traceback" not in (tmp_path / "whole.out").read_text()
