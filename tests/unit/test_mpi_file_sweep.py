"""``mpi_pool.mpich_files.sweep``: after an application task, the MPICH files of
``/dev/shm`` made since it started that no process maps (its ranks ended without
``MPI_Finalize``) are removed; a file a process still maps, or one older than the task, stays.
Local blocks do the same when a block's job fails and when they stop."""

from __future__ import annotations

import mmap
import os
import secrets
import time
from pathlib import Path

from waiting import wait_for

from rankpool.launchers.local import LocalBlocks
from rankpool.mpi_pool.config import PoolConfig
from rankpool.mpi_pool.mpich_files import STAMP_LAG, sweep


def _make(name: str) -> str:
    path = f"/dev/shm/{name}"
    with open(path, "wb") as f:
        f.write(b"\0" * 4096)
    return path


def test_only_fresh_unmapped_mpich_files_are_swept() -> None:
    """Files made since ``since`` and mapped by no process go; the file made at once after
    ``since`` too, although the kernel stamps it up to a tick earlier (``STAMP_LAG``)."""
    token = secrets.token_hex(4)
    old = _make(f"mpich_shm_old{token}_0")
    time.sleep(STAMP_LAG + 0.05)
    since = time.time()
    gone = f"/dev/shm/mpich_shm_gone{token}_0"
    os.close(os.open(gone, os.O_CREAT | os.O_WRONLY, 0o600))  # stamped a tick's lag early
    held = _make(f"mpich_shm_held{token}_0")
    other = _make(f"rankpool-test-{token}")
    try:
        with open(held, "r+b") as f, mmap.mmap(f.fileno(), 4096):  # a rank still maps it
            removed = sweep(since)
            assert gone in removed and not os.path.exists(gone)
            assert os.path.exists(held) and os.path.exists(old) and os.path.exists(other)
            assert held not in removed and old not in removed
    finally:
        for path in (old, gone, held, other):
            if os.path.exists(path):
                os.unlink(path)


def test_local_blocks_remove_what_a_killed_block_left(tmp_path: Path) -> None:
    """A block's job that ends without ``MPI_Finalize`` (here a stand-in ``mpiexec`` that makes
    an MPICH file and dies of SIGKILL) leaves its file; the blocks remove it when they see the
    job end, and again when they stop, while a file a running job maps stays."""
    token = secrets.token_hex(4)
    left = f"/dev/shm/mpich_shm_left{token}_0"
    fake = tmp_path / "mpiexec"
    fake.write_text(f"#!/bin/sh\nhead -c 4096 /dev/zero > {left}\nkill -9 $$\n")
    fake.chmod(0o700)
    blocks = LocalBlocks(1, PoolConfig(interchange="tcp://127.0.0.1:1", block_id="0"), str(fake))
    held = ""
    try:
        blocks.start()
        assert wait_for(lambda: blocks.exited(), timeout=30) == {"0": -9}
        assert not os.path.exists(left)
        held = _make(f"mpich_shm_held{token}_0")
        with open(held, "r+b") as f, mmap.mmap(f.fileno(), 4096):
            blocks.stop()
            assert os.path.exists(held)
        blocks.stop()
        assert not os.path.exists(held)
    finally:
        for path in (left, held):
            if path and os.path.exists(path):
                os.unlink(path)
