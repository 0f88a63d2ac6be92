"""Job-script mode: pools started by the user's own ``sbatch``/``qsub`` script.

An executor with ``managed=False`` submits no blocks. It starts its interchange and tells the
user how a pool attaches to it, in two forms:

* :func:`pool_command`, the command line every rank of one MPI launch runs
  (``python -m rankpool.mpi_pool --interchange tcp://HOST:PORT --block-id ID ...``);
* ``pool_command.sh`` in the executor's run directory (:func:`write_pool_script`), the same
  as a script that takes the block id from its first argument or from the batch job's id, so
  a job script needs only one line::

      srun --ntasks 64 --ntasks-per-node 32 sh RUN_DIR/pool_command.sh
      mpiexec -n 64 -ppn 32 sh RUN_DIR/pool_command.sh

:func:`detect_batch` says which batch system and launcher the environment points to; the
script uses the same job-id variables, and ``rankpool info`` prints the result.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..mpi_pool.config import PoolConfig
from ..private_files import SCRIPT_MODE, write_private

#: the script in a run directory that starts one pool (run on every rank of one launch)
POOL_SCRIPT = "pool_command.sh"
#: the environment variable Parsl's monitoring wrapper reads for the ``try`` table's block
BLOCK_ENV = "PARSL_WORKER_BLOCK_ID"
#: the batch systems' job-id variables, innermost first (a Flux instance may run in a Slurm job)
JOB_ID_VARS = (("Flux", "FLUX_JOB_ID"), ("Slurm", "SLURM_JOB_ID"), ("PBS", "PBS_JOBID"),
               ("LSF", "LSB_JOBID"))


def pool_argv(base: PoolConfig, block_id: str, python: str | None = None) -> list[str]:
    """The words of :func:`pool_command`; ``block_id`` is in words 1 and 8 (0-based) only."""
    cfg = replace(base, block_id=block_id, pool_id="")
    argv = cfg.to_argv()
    assert argv[2:4] == ["--block-id", block_id], "PoolConfig.to_argv() changed its order"
    return ["env", f"{BLOCK_ENV}={block_id}", python or sys.executable, "-m", "rankpool.mpi_pool",
            *argv]


def pool_command(base: PoolConfig, block_id: str, python: str | None = None) -> str:
    """The command that starts one pool of block ``block_id`` on every rank of an MPI launch.

    ``base`` is the executor's pool configuration (interchange address and port, heartbeats,
    run directory, and the interchange's public key file when connections are encrypted).
    """
    return shlex.join(pool_argv(base, block_id, python))


def write_pool_script(run_dir: str, base: PoolConfig, launcher: Any = None,
                      nodes: int = 1) -> str:
    """Write ``<run_dir>/pool_command.sh``; return its path.

    The block id is the script's first argument, else the batch job's id, else ``manual``.
    When ``launcher`` is a rankpool launcher whose ``ranks_per_node`` is set, the script's
    comment shows the launch line that runs it for a block of ``nodes`` nodes.
    """
    path = os.path.join(run_dir, POOL_SCRIPT)
    words = [shlex.quote(w) for w in pool_argv(base, "manual")]
    words[1], words[8] = f'{BLOCK_ENV}="$block"', '"$block"'  # the block id is the shell's
    fallback = "manual"
    for _, var in reversed(JOB_ID_VARS):
        fallback = f"${{{var}:-{fallback}}}"
    example = _launch_example(launcher, nodes, path)
    text = "\n".join([
        "#!/bin/sh",
        "# Start one rankpool pool attached to the executor that wrote this file.",
        "# Run it on every rank of ONE MPI launch in your job script, for example:",
        f"#   srun --ntasks N --ntasks-per-node RPN sh {shlex.quote(path)} [BLOCK_ID]",
        f"#   mpiexec -n N -ppn RPN sh {shlex.quote(path)} [BLOCK_ID]",
        *([f"# This executor's launcher would run:  {example}"] if example else []),
        "# Rank 0 is the pool's manager; the other ranks run tasks. BLOCK_ID defaults to the",
        "# batch job's id.",
        f"block=${{1:-{fallback}}}",
        "exec " + " ".join(words),
        ""])
    return write_private(path, text, mode=SCRIPT_MODE)


def _launch_example(launcher: Any, nodes: int, path: str) -> str:
    from .template import RankLauncher
    if not isinstance(launcher, RankLauncher) or launcher.ranks_per_node is None:
        return ""
    try:
        return launcher.launch_line(f"sh {shlex.quote(path)}", nodes)
    except ValueError:
        return ""


# -- the batch environment -------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchEnvironment:
    """The batch system and launcher the environment points to, for ``rankpool info``."""

    #: "Slurm", "PBS", "Flux", "LSF", or "" for none
    system: str
    #: the job's id when running inside a job, else ""
    job_id: str
    #: the rankpool launcher to use there, as a constructor call
    launcher: str
    #: what points to a Cray programming environment or launcher, or ""
    cray: str
    #: how it was detected
    evidence: str


def detect_cray(environ: Mapping[str, str], which: Callable[[str], str | None]) -> str:
    """What points to a Cray system: programming environment, ALPS (``aprun``) or PALS."""
    found = [f"{v}={environ[v]}" for v in ("PE_ENV", "CRAYPE_VERSION") if environ.get(v)]
    if which("aprun"):
        found.append("aprun on PATH (ALPS)")
    if any(k.startswith("PALS_") for k in environ) or os.path.isdir("/opt/cray/pals"):
        found.append("PALS")
    return ", ".join(found)


def _launcher_for(system: str, cray: str, which: Callable[[str], str | None]) -> str:
    if system == "Flux":
        return "FluxLauncher(ranks_per_node=N)"
    if system == "Slurm":
        return "SrunLauncher(ranks_per_node=N)"
    if system == "LSF":
        return ("JsrunLauncher(ranks_per_node=N)" if which("jsrun")
                else "MpirunLauncher(ranks_per_node=N)")
    if system == "PBS":
        if "PALS" in cray:
            return 'MpiexecLauncher(flavor="pals", ranks_per_node=N)'
        if "aprun" in cray:
            return "AprunLauncher(ranks_per_node=N)"
        return "MpiexecLauncher(ranks_per_node=N)"
    return "none: the default local provider starts blocks with the bundled mpiexec"


def detect_batch(environ: Mapping[str, str] | None = None,
                 which: Callable[[str], str | None] = shutil.which) -> BatchEnvironment:
    """The batch system this process runs under (its job-id variable), or whose commands are
    on ``PATH`` (a login node), and the rankpool launcher that fits it."""
    env = os.environ if environ is None else environ
    cray = detect_cray(env, which)
    system, job_id, evidence = "", "", ""
    if env.get("FLUX_URI"):
        system, evidence = "Flux", "FLUX_URI is set"
        job_id = env.get("FLUX_JOB_ID", "")
    else:
        for name, var in JOB_ID_VARS[1:]:
            if env.get(var):
                system, job_id, evidence = name, env[var], f"{var} is set"
                break
    if not system:
        for name, command in (("Slurm", "sbatch"), ("PBS", "qsub"), ("LSF", "bsub"),
                              ("Flux", "flux")):
            if which(command):
                system, evidence = name, f"{command} on PATH, not inside a job"
                break
    return BatchEnvironment(system, job_id, _launcher_for(system, cray, which), cray,
                            evidence or "no batch system found")
