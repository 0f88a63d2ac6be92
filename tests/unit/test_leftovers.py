"""The suite's own leftover check (``tests/leftovers.py``): what it counts as left behind."""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from leftovers import Watch

pytestmark = pytest.mark.timeout(60)


@contextmanager
def _mapped(name: str) -> Iterator[str]:
    """``/dev/shm/<name>``, made and mapped here while the block runs, then removed."""
    path = f"/dev/shm/{name}"
    try:
        with open(path, "w+b") as f:
            f.truncate(4096)
            with mmap.mmap(f.fileno(), 4096):
                yield path
    finally:
        if os.path.exists(path):
            os.unlink(path)


def _forked_child_seen(watch: Watch, name: str) -> None:
    """Fork a child that maps what this process maps, let ``watch`` see it there, end it."""
    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    try:
        deadline = time.monotonic() + 10
        while name not in watch.shm and time.monotonic() < deadline:
            watch.look()
        assert name in watch.shm
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def test_the_watched_process_own_mpi_file_seen_in_its_forked_child_is_not_left_behind() -> None:
    """MPICH names the file of a singleton (mpi4py initialised MPI in the test process) after
    its pid; a child forked from it maps the file too. It goes with the process's own
    MPI_Finalize, at its exit: not left behind."""
    name = f"mpich_shm_{os.getpid():x}t_0"
    with _mapped(name):
        watch = Watch(os.getpid())
        _forked_child_seen(watch, name)
        # (other tests' processes, and what they map, may still be there: only ours counts)
        assert name not in watch.gone(timeout=1.0)[1]


def test_a_file_the_watched_process_no_longer_maps_is_left_behind() -> None:
    name = f"mpich_shm_{os.getpid():x}u_0"
    with _mapped(name) as path:
        watch = Watch(os.getpid())
        _forked_child_seen(watch, name)
    with open(path, "wb"):  # made again, and mapped by nobody
        pass
    try:
        assert name in watch.gone(timeout=0.5)[1]
    finally:
        os.unlink(path)
