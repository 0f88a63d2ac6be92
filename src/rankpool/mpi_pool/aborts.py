"""Ending the whole MPI job at once, without leaving MPICH's files behind.

``MPI_Abort`` kills every rank; MPICH then never unlinks the shared-memory file its ranks of a
node share (``/dev/shm/mpich_shm_*``, several MB each), so every abort would leave one per node.
Every rank of a node mapped that file at ``MPI_Init``, so the aborting rank may unlink the ones
it maps first: the mappings stay valid until the processes end, and the name is gone.
"""

from __future__ import annotations

import os
import sys
from typing import Any

SHM_DIR = "/dev/shm/"
#: the names MPICH gives the files its ranks of one node share
MPICH_PREFIX = "mpich_"


def mapped_mpi_files(maps: str = "/proc/self/maps") -> list[str]:
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


def abort(comm: Any, code: int) -> None:
    """``comm.Abort(code)``, after unlinking this node's MPICH files and flushing stderr."""
    for path in mapped_mpi_files():
        try:
            os.unlink(path)
        except OSError:
            pass
    sys.stderr.flush()
    comm.Abort(code)
