"""MPICH's files in ``/dev/shm``: unlinked as soon as every rank has them mapped.

The ranks of one node share a file MPICH makes at ``MPI_Init`` (``/dev/shm/mpich_shm_*``, MBs
each) and unlinks in ``MPI_Finalize``. A job that does not finalize on every rank (a rank
killed, ``MPI_Abort``, a Ctrl-C that Hydra turns into a kill) leaves it behind, one per node
and run. Once every rank has passed ``MPI_Init`` the name is no longer needed: the mappings
stay valid until the processes end, so a pool unlinks it at once (:func:`release`) and nothing
is left whatever way the job ends. :func:`abort` unlinks what is still there before
``MPI_Abort``.

A job killed before every rank got that far (a block cancelled while it starts), and an MPI
application whose ranks ended without ``MPI_Finalize``, leave their files: :func:`sweep`
removes this user's that nobody maps any more, made since a given time. Each rank's keeper
sweeps when its rank died before serving; an application task's rank after the application;
local blocks when a block's job fails.
"""

from __future__ import annotations

import os
import sys
import time
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


#: seconds a file's timestamp may lag ``time.time``: the kernel stamps files from a clock read
#: once a tick (up to 10 ms behind), so a file made just after ``since`` may read as older
STAMP_LAG = 0.05


def sweep(since: float, settle: float = 0.1) -> list[str]:
    """Unlink the MPICH files in ``/dev/shm`` of this user made since ``since``
    (``time.time``) that no process maps, and return their paths. A file of a job still
    running is mapped by its ranks and stays; one found unmapped is looked at again after
    ``settle`` seconds, so that a file another job has just created and not yet mapped (the
    moment between MPICH's ``open`` and ``mmap``) is never taken from it."""
    import psutil  # here, not at import: a rank's keeper imports this module only to sweep

    uid = os.getuid()

    def unmapped() -> list[str]:
        fresh = []
        try:
            with os.scandir(SHM_DIR) as entries:
                for entry in entries:
                    if entry.name.startswith(MPICH_PREFIX):
                        st = entry.stat(follow_symlinks=False)
                        if st.st_uid == uid and st.st_ctime >= since - STAMP_LAG:
                            fresh.append(entry.path)
        except OSError:
            return []
        if not fresh:
            return []
        in_use: set[str] = set()
        for proc in psutil.process_iter():
            try:
                if proc.uids().real == uid:
                    in_use.update(mapped(f"/proc/{proc.pid}/maps"))
            except (psutil.Error, OSError):
                continue
        return [path for path in fresh if path not in in_use]

    if not unmapped():
        return []
    time.sleep(settle)
    removed = []
    for path in unmapped():
        try:
            os.unlink(path)
            removed.append(path)
        except OSError:
            pass
    return removed
