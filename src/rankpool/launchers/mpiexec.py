"""Finding the ``mpiexec`` that starts local pools.

The bundled one (``pip install rankpool[mpich]`` puts MPICH's ``mpiexec`` next to the Python
executable of the virtual environment) comes first, then ``PATH``. An explicit path, or the
``RANKPOOL_MPIEXEC`` environment variable, overrides both.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ENV_VAR = "RANKPOOL_MPIEXEC"


class MpiexecNotFound(FileNotFoundError):
    """No ``mpiexec`` could be found; the message says where rankpool looked."""


def find_mpiexec(explicit: str | os.PathLike[str] | None = None) -> str:
    """Return the path of the ``mpiexec`` to use."""
    chosen = explicit if explicit is not None else os.environ.get(ENV_VAR)
    if chosen:
        path = shutil.which(str(chosen))
        if path is None:
            source = "argument" if explicit is not None else f"${ENV_VAR}"
            raise MpiexecNotFound(f"mpiexec given by {source} not found or not executable: "
                                  f"{chosen}")
        return path
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    path = shutil.which("mpiexec")
    if path is None:
        raise MpiexecNotFound(
            f"no mpiexec next to {sys.executable} nor on PATH: install the bundled MPI with "
            f"'pip install rankpool[mpich]', load your site's MPI module, or set ${ENV_VAR}")
    return path


def survival_options(mpiexec: str) -> list[str]:
    """The options that keep an MPI job running when one of its processes exits, for the
    ``mpiexec`` at this path: Hydra's ``-disable-auto-cleanup`` (else Hydra ends the job at
    the first exit), Open MPI 5's ``--with-ft ulfm`` (which also tells the survivors). None
    for others (see docs/faults.md)."""
    flavor = mpiexec_flavor(mpiexec)
    if flavor == "hydra":
        return ["-disable-auto-cleanup"]
    if flavor == "openmpi":
        return ["--with-ft", "ulfm"]
    return []


def mpiexec_flavor(mpiexec: str) -> str:
    """``"hydra"`` (MPICH), ``"openmpi"``, or ``""`` (unknown), by the programs beside it."""
    here = Path(mpiexec).resolve().parent
    if (here / "hydra_pmi_proxy").exists() or Path(mpiexec).name.endswith(".hydra"):
        return "hydra"
    if (here / "ompi_info").exists() or (here / "prterun").exists():
        return "openmpi"
    return ""
