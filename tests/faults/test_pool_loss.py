"""Faults that end a pool: the whole pool killed with ``kill -9``, a worker rank that calls
``MPI.COMM_WORLD.Abort``; the launcher ends the job, the interchange declares the pool lost,
every task in flight on it fails with ``ManagerLost``, and ``Executor`` starts a new block that
serves what follows. A worker rank that ends its process inside a task (``os._exit``) or
segfaults costs its task only (``WorkerLost``; more in ``test_rank_death.py``), and ends the
pool only when too many ranks are gone. Heartbeats are fast (period 0.2 s, threshold 2 s).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fault_tasks as t
import pytest
from helpers import (
    FAST,
    descendants,
    executor,
    pool_tree,
    wait_for,
    wait_gone,
    wait_no_new_children,
)

from rankpool import Executor, ManagerLost, WorkerLost

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(90)]

THRESHOLD = FAST["heartbeat_threshold"]
#: tasks queued behind the running ones in the shutdown test: more than a pool takes ahead
QUEUED = 3000


def assert_serves_on_a_new_block(ex: Executor, old_pids: set[int], block: str) -> None:
    """1- and 2-rank tasks run afterwards, on ranks of the replacement block only."""
    pids = {f.result(timeout=30) for f in [ex.submit(t.nap, 0) for _ in range(4)]}
    assert not pids & old_pids
    assert [p["block_id"] for p in ex.pools()] == [block]
    assert ex.requirements(num_ranks=2).submit(t.simulate, 2).result(timeout=20) == 4
    assert ex._broken is None


def test_pool_killed_fails_in_flight_tasks_and_a_new_block_takes_over(tmp_path: Path) -> None:
    before = descendants()
    with executor(tmp_path) as ex:
        assert ex.submit(t.square, 3).result(timeout=20) == 9
        mpiexec = ex._blocks.procs["0"]  # type: ignore[union-attr]
        old = pool_tree(ex)
        running = [ex.submit(t.nap, 30) for _ in range(2)]
        wait_for(lambda: ex.pools()[0]["busy_ranks"] == 2, timeout=10)
        # many more in flight: held by the pool or queued in the interchange
        more = [ex.submit(t.nap, 0.01) for _ in range(200)]
        wide = [ex.requirements(num_ranks=2).submit(t.simulate, 1) for _ in range(20)]

        os.killpg(mpiexec.pid, signal.SIGKILL)
        for f in running:  # noticed within the threshold (plus a margin for a busy machine)
            exc = f.exception(timeout=THRESHOLD + 5)
            assert isinstance(exc, ManagerLost), repr(exc)
            assert exc.block_id == "0" and exc.hosts and exc.reason  # silent, or disconnected
        wait_gone(old, timeout=20)  # the ranks did not outlive their mpiexec

        # every other future ends too: lost with the pool, or run on the new block
        for f in more + wide:
            exc = f.exception(timeout=60)
            assert exc is None or isinstance(exc, ManagerLost), repr(exc)
        assert all(f.result(0) == 2 for f in wide if f.exception(0) is None)
        assert_serves_on_a_new_block(ex, {p.pid for p in old}, "1")
    wait_no_new_children(before)


def _lose_the_pool_from_inside(tmp_path: Path, submit: Callable[[Executor], Any]) -> None:
    """Run the task ``submit`` sends beside a bystander: both fail with ``ManagerLost``
    (the job ended under them), and a new block serves what follows."""
    before = descendants()
    with executor(tmp_path, max_ranks=3) as ex:
        assert ex.submit(t.square, 3).result(timeout=20) == 9
        old = pool_tree(ex)
        bystander = ex.submit(t.nap, 30)
        wait_for(lambda: ex.pools()[0]["busy_ranks"] == 1, timeout=10)
        culprit = submit(ex)
        for f in (culprit, bystander):
            exc = f.exception(timeout=THRESHOLD + 10)
            assert isinstance(exc, ManagerLost), repr(exc)
            assert exc.block_id == "0"
        wait_gone(old, timeout=20)
        assert_serves_on_a_new_block(ex, {p.pid for p in old}, "1")
    wait_no_new_children(before)


def test_worker_rank_exits_inside_a_task(tmp_path: Path) -> None:
    """Rank 1 of a 2-rank task calls ``os._exit(7)`` while rank 0 waits in an allreduce: the
    task fails with ``WorkerLost``, the waiting rank is ended after the grace period, and a
    bystander on the third rank finishes; two of three ranks lost retire the pool (it exits 0)
    and a new block serves what follows."""
    before = descendants()
    with executor(tmp_path, max_ranks=3) as ex:
        assert ex.submit(t.square, 3).result(timeout=20) == 9
        mpiexec = ex._blocks.procs["0"]  # type: ignore[union-attr]
        old = pool_tree(ex)
        bystander = ex.submit(t.nap, 1.0)
        wait_for(lambda: ex.pools()[0]["busy_ranks"] == 1, timeout=10)
        culprit = ex.requirements(num_ranks=2).submit(t.exit_on_rank, 1)
        exc = culprit.exception(timeout=THRESHOLD + 10)
        assert isinstance(exc, WorkerLost) and exc.exit_code == 7, repr(exc)
        assert bystander.result(timeout=20) in {p.pid for p in old}
        wait_for(lambda: mpiexec.poll() is not None, timeout=30)
        assert mpiexec.returncode == 0
        wait_gone(old, timeout=20)
        assert_serves_on_a_new_block(ex, {p.pid for p in old}, "1")
    wait_no_new_children(before)


def test_segfault_inside_a_task(tmp_path: Path) -> None:
    """The segfaulting task fails with ``WorkerLost`` naming SIGSEGV; the bystander finishes,
    and the pool serves on its other two ranks."""
    before = descendants()
    with executor(tmp_path, max_ranks=3) as ex:
        assert ex.submit(t.square, 3).result(timeout=20) == 9
        old = pool_tree(ex)
        bystander = ex.submit(t.nap, 1.0)
        wait_for(lambda: ex.pools()[0]["busy_ranks"] == 1, timeout=10)
        exc = ex.submit(t.segfault).exception(timeout=20)
        assert isinstance(exc, WorkerLost) and exc.signal == signal.SIGSEGV, repr(exc)
        assert bystander.result(timeout=20) in {p.pid for p in old}
        assert ex.requirements(num_ranks=2).submit(t.simulate, 2).result(timeout=20) == 4
        assert [(p["block_id"], p["ranks"]) for p in ex.pools()] == [("0", 2)]
    wait_no_new_children(before)


def test_abort_inside_a_task(tmp_path: Path) -> None:
    """``MPI.COMM_WORLD.Abort`` in a task ends the whole pool, as the docs warn."""
    _lose_the_pool_from_inside(tmp_path, lambda ex: ex.submit(t.call_abort))


def test_a_pool_killed_while_shutdown_waits_is_replaced_and_every_future_ends(
        tmp_path: Path) -> None:
    """``shutdown(wait=True)`` waits for the pending futures; the block dies meanwhile: it is
    replaced as ever, the tasks it ran fail with ``ManagerLost``, the queued ones run on the
    new block, and the shutdown returns (the blocks stay watched until it stops them)."""
    before = descendants()
    with executor(tmp_path) as ex:
        assert ex.submit(t.square, 3).result(timeout=20) == 9
        mpiexec = ex._blocks.procs["0"]  # type: ignore[union-attr]
        running = [ex.submit(t.nap, 30) for _ in range(2)]
        wait_for(lambda: ex.pools()[0]["busy_ranks"] == 2, timeout=10)
        # more than the pool takes in advance: some wait in the interchange for a pool
        queued = [ex.submit(t.square, i) for i in range(QUEUED)]
        killer = threading.Timer(0.5, os.killpg, (mpiexec.pid, signal.SIGKILL))
        killer.start()
        ex.shutdown(wait=True)
        killer.join()
        for f in running:
            assert isinstance(f.exception(0), ManagerLost), repr(f.exception(0))
        lost = [f for f in queued if f.exception(0) is not None]
        assert all(isinstance(f.exception(0), ManagerLost) for f in lost)
        assert len(lost) < QUEUED  # the others ran on the new block
        assert all(f.result(0) == i * i for i, f in enumerate(queued) if f not in lost)
        assert ex._blocks.started == {"0", "1"}  # type: ignore[union-attr]
    wait_no_new_children(before)
