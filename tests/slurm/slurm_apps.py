"""Apps for tests/slurm, in a module the ranks import (conftest.py puts it on PYTHONPATH).

Each rank says where it runs: the fake node Slurm started it on (``SLURMD_NODENAME``, the same
for every rank of one node whether ``srun`` or Hydra's ``mpiexec`` started it), and MPI's
processor name (this host for every fake node). Waiting is on files, with deadlines.
"""

from __future__ import annotations

import os
import time
from typing import Any

from parsl import bash_app, python_app


def wait_file(path: str, timeout: float = 60.0) -> None:
    """Wait until ``path`` exists; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout} s")
        time.sleep(0.02)


def here(comm: Any = None) -> dict[str, Any]:
    """Where this rank runs, as Slurm and MPI see it."""
    from mpi4py import MPI
    env = os.environ
    return {"node": env.get("SLURMD_NODENAME"), "node_id": env.get("SLURM_NODEID"),
            "job": env.get("SLURM_JOB_ID"), "block": env.get("PARSL_WORKER_BLOCK_ID"),
            "host": MPI.Get_processor_name(), "rank": comm.Get_rank() if comm else 0}


@python_app
def where(comm: Any = None) -> dict[str, Any]:
    return here(comm)


@python_app
def where_together(started: str, others: list[str], comm: Any = None) -> dict[str, Any]:
    """Say it started, then wait until every task in ``others`` has: the tasks run at once."""
    if comm.Get_rank() == 0:
        open(started, "a").close()
        for path in others:
            wait_file(path)
    comm.Barrier()
    return here(comm)


@python_app
def second_rank_killed(comm: Any = None) -> dict[str, Any]:
    """A 2-rank task whose second rank is killed (SIGKILL); the first returns."""
    import signal
    if comm.Get_rank() == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return here(comm)


@python_app
def hold_until(started: str, go: str) -> dict[str, Any]:
    """Write the block it runs on to ``started``, then wait for ``go``."""
    with open(started + ".tmp", "w") as fh:
        fh.write(os.environ.get("PARSL_WORKER_BLOCK_ID", "?"))
    os.replace(started + ".tmp", started)
    wait_file(go)
    return here()


@python_app
def hang_first_try(marker: str) -> dict[str, Any]:
    """The first try waits (its block ends meanwhile); a later try says where it ran."""
    if not os.path.exists(marker):
        open(marker, "a").close()
        wait_file(marker + ".never", timeout=300)
    return here()


#: the Python MPI program of the integration tests: each rank prints its rank, size and node
WORLD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "integration", "mpi_programs", "world.py")


@bash_app
def world(parsl_resource_specification: dict = {},  # noqa: B006
          stdout: str | None = None, stderr: str | None = None) -> str:
    """A Parsl MPI-mode bash app: the program on the task's ranks, through the prefix."""
    import sys
    return f"echo prefix: $PARSL_MPI_PREFIX; $PARSL_MPI_PREFIX {sys.executable} -m mpi4py {WORLD}"
