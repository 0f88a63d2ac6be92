"""``apps.process_tree.sweep_mpi_files``: after an application task, the MPICH files of
``/dev/shm`` made since it started that no process maps (its ranks ended without
``MPI_Finalize``) are removed; a file a process still maps, or one older than the task, stays."""

from __future__ import annotations

import mmap
import os
import secrets
import time

from rankpool.apps.process_tree import sweep_mpi_files


def _make(name: str) -> str:
    path = f"/dev/shm/{name}"
    with open(path, "wb") as f:
        f.write(b"\0" * 4096)
    return path


def test_only_fresh_unmapped_mpich_files_are_swept() -> None:
    token = secrets.token_hex(4)
    old = _make(f"mpich_shm_old{token}_0")
    since = time.time()
    time.sleep(0.05)
    gone = _make(f"mpich_shm_gone{token}_0")
    held = _make(f"mpich_shm_held{token}_0")
    other = _make(f"rankpool-test-{token}")
    try:
        with open(held, "r+b") as f, mmap.mmap(f.fileno(), 4096):  # a rank still maps it
            removed = sweep_mpi_files(since)
            assert gone in removed and not os.path.exists(gone)
            assert os.path.exists(held) and os.path.exists(old) and os.path.exists(other)
            assert held not in removed and old not in removed
    finally:
        for path in (old, gone, held, other):
            if os.path.exists(path):
                os.unlink(path)
