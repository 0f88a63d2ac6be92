"""MPICH's files in ``/dev/shm``: unlinked as soon as every rank has them mapped.

The ranks of one node share a file MPICH makes at ``MPI_Init`` (``/dev/shm/mpich_shm_*``, MBs
each) and unlinks in ``MPI_Finalize``. A job that does not finalize on every rank (a rank
killed, ``MPI_Abort``, a Ctrl-C that Hydra turns into a kill) leaves it behind, one per node
and run. Once every rank has passed ``MPI_Init`` the name is no longer needed: the mappings
stay valid until the processes end, so a pool unlinks it at once (:func:`release`) and nothing
is left whatever way the job ends. :func:`abort` unlinks what is still there before
``MPI_Abort``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

SHM_DIR = "/dev/shm/"
#: the names MPICH gives the files its ranks of one node share
MPICH_PREFIX = "mpich_"


def mapped(maps: str = "/proc/self/maps") -> list[str]:
    """The MPICH files in ``/dev/shm`` this process has mapped (none where /proc is missing)."""
    found: set[str] = set()
    try:
        with open(maps) as f:
            for line in f:
                at = line.find(SHM_DIR + MPICH_PREFIX)
                if at >= 0:
                    path = line[at:].strip()
                    if not path.endswith(" (deleted)"):
                        found.add(path)
    except OSError:
        return []
    return sorted(found)


def unlink_mapped() -> None:
    for path in mapped():
        try:
            os.unlink(path)
        except OSError:
            pass


def release(comm: Any) -> None:
    """Collective over ``comm``: once every rank of it is past ``MPI_Init``, unlink the MPICH
    files this rank maps. Only when ``comm`` holds every process of the job (a rank outside
    it might not have attached yet)."""
    from mpi4py import MPI
    if comm.Get_size() != MPI.COMM_WORLD.Get_size():
        return
    comm.Barrier()
    unlink_mapped()


def abort(comm: Any, code: int) -> None:
    """``comm.Abort(code)``, after unlinking this node's MPICH files and flushing stderr."""
    unlink_mapped()
    sys.stderr.flush()
    comm.Abort(code)
