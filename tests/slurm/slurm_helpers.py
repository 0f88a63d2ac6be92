"""Helpers for the tests against a real one-machine Slurm (``ci/slurm.sh``).

The cluster fakes nodes ``n1``, ``n2`` on this host, each with this machine's cores (2 here):
the executor's blocks ask for 2 ranks per node, which their jobs hold without ``--overcommit``.
Every test's Slurm jobs carry :data:`JOB_PREFIX` in their name (Parsl names its jobs
``parsl.<label>.block-<n>.<time>``), so that leftovers can be found and cancelled.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Any

from parsl.providers import SlurmProvider

from rankpool import ExtremeScaleExecutor

#: part of the name of every Slurm job the tests submit
JOB_PREFIX = "rpslurm"
#: fast liveness: a pool whose job ended is declared lost within about 3 s
FAST = {"heartbeat_period": 0.5, "heartbeat_threshold": 3.0}
#: the interchange listens on loopback: the fake nodes are this host
ADDRESS = "127.0.0.1"


def slurm_problem() -> str:
    """Why the Slurm tests cannot run here, or "" when a cluster of 2+ nodes answers."""
    if not os.environ.get("SLURM_CONF"):
        return ("SLURM_CONF is not set: start a one-machine Slurm with "
                "'SLURM_NODES=2 bash ci/slurm.sh start' and export "
                "SLURM_CONF=/tmp/slurm-local/slurm.conf (ci/test.sh does both)")
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "sinfo/sbatch are not on PATH: install the Slurm client (ci/slurm.sh does)"
    try:
        proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True,
                              text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 15 s: is slurmctld running? (ci/slurm.sh status)"
    if proc.returncode != 0:
        return f"sinfo failed: {proc.stderr.strip()[:300]}"
    up = {line.split()[0] for line in proc.stdout.splitlines()
          if line.split()[-1].rstrip("*~#") in ("idle", "mixed", "allocated", "completing")}
    if len(up) < 2:
        return (f"these tests need 2 Slurm nodes up, sinfo shows: {proc.stdout.strip()!r} "
                f"(start with SLURM_NODES=2)")
    return ""


def squeue() -> dict[str, tuple[str, str, str]]:
    """Jobs Slurm still lists (completing ones included): id -> (name, state, node list)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%j|%T|%N"], capture_output=True, text=True,
                         timeout=15, check=True).stdout
    jobs = {}
    for line in out.splitlines():
        job, name, state, nodes = line.strip().split("|")
        jobs[job] = (name, state, nodes)
    return jobs


def our_jobs() -> list[str]:
    return [job for job, (name, _, _) in squeue().items() if JOB_PREFIX in name]


def cancel_ours() -> None:
    jobs = our_jobs()
    if jobs:
        subprocess.run(["scancel", *jobs], capture_output=True, timeout=15)


class FastSlurmProvider(SlurmProvider):
    """``SlurmProvider`` polled every second (Parsl's is 60 s: too slow to see a job end)."""

    @property
    def status_polling_interval(self) -> int:
        return 1


def provider(launcher: Any, *, nodes_per_block: int, **kwargs: Any) -> FastSlurmProvider:
    """A Slurm provider for the fake cluster; the job scripts run with this test's Python."""
    kwargs.setdefault("init_blocks", 1)
    kwargs.setdefault("max_blocks", 1)
    kwargs.setdefault("walltime", "00:05:00")
    init = f"export PATH={os.path.dirname(sys.executable)}:$PATH"
    if kwargs.get("worker_init"):  # the test's own, after ours
        init += "\n" + kwargs.pop("worker_init")
    return FastSlurmProvider(nodes_per_block=nodes_per_block, launcher=launcher, cmd_timeout=30,
                             worker_init=init, **kwargs)


def executor(prov: Any, **kwargs: Any) -> ExtremeScaleExecutor:
    kwargs.setdefault("label", JOB_PREFIX)
    return ExtremeScaleExecutor(provider=prov, address=ADDRESS, **{**FAST, **kwargs})
