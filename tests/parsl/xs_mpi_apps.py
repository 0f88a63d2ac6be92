"""Parsl bash apps written for Parsl's MPI mode (``$PARSL_MPI_PREFIX``), unchanged whichever
executor runs them: imported by reference on the workers, as :mod:`xs_apps` is."""

from __future__ import annotations

import sys
from pathlib import Path

from parsl import bash_app

#: the Python MPI program of the integration tests: each rank prints its rank, size and host
WORLD = Path(__file__).resolve().parent.parent / "integration" / "mpi_programs" / "world.py"


@bash_app
def world(code: int = 0, parsl_resource_specification: dict = {},  # noqa: B006
          stdout: str | None = None, stderr: str | None = None) -> str:
    return f"$PARSL_MPI_PREFIX {sys.executable} -m mpi4py {WORLD} {code}"


@bash_app
def world_fails_once(marker: str, parsl_resource_specification: dict = {},  # noqa: B006
                     stdout: str | None = None, stderr: str | None = None) -> str:
    run = f"$PARSL_MPI_PREFIX {sys.executable} -m mpi4py {WORLD}"
    return f"if [ -e {marker} ]; then {run} 0; else touch {marker}; {run} 3; fi"
