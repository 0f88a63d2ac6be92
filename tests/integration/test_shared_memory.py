"""Large buffers through ``rankpool.Executor``'s shared-memory plane, end to end.

Arrays of 1 MB and 64 MB, several large tasks at once, a bytearray, a non-contiguous array,
a multi-rank task whose ranks all read one argument (each its own copy), results and arguments
borrowed in place and kept past their task, the plane switched off, a descriptor naming no
segment, and what ``/dev/shm`` holds after a normal run and after a pool was killed.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import executor, wait_for

from rankpool import Executor
from rankpool.errors import ManagerLost, SharedMemoryError
from rankpool.shm import arena as shm
from rankpool.shm import run as shm_run

pytestmark = pytest.mark.mpi

MB = 1024 * 1024


def echo(x: Any) -> Any:
    return x


def scaled(x: np.ndarray, k: int) -> np.ndarray:
    return x * k


def checksum(x: np.ndarray, comm: Any = None) -> list[float]:
    return comm.allgather(float(x.sum()))


def scribble_then_sum(x: np.ndarray, comm: Any = None) -> list[float]:
    """Rank 0 overwrites its argument before every rank sums its own."""
    if comm.Get_rank() == 0:
        x[:] = -1.0
    comm.Barrier()
    return comm.allgather(float(x.sum()))


def keep_or_sum(x: np.ndarray | None = None) -> float | None:
    """Keep the argument past the task (in a module every task of the rank sees); or, given
    none, sum what was kept."""
    import sys
    if x is not None:
        sys.modules["rankpool"].__dict__.setdefault("_kept_by_test", []).append(x)
        return None
    return float(sum(k.sum() for k in sys.modules["rankpool"].__dict__["_kept_by_test"]))


def states(names: list[str]) -> list[int]:
    """The state byte of each named segment (FREE, IN_USE, LENT)."""
    out = []
    for name in names:
        with open(os.path.join(shm_run.SHM_DIR, name), "rb") as f:
            out.append(f.read(shm_run.HEADER)[shm_run.STATE_AT])
    return out


def run_files(prefix: str) -> list[str]:
    return sorted(n for n in os.listdir(shm_run.SHM_DIR) if n.startswith(prefix))


def worker_segments(ex: Executor) -> list[str]:
    """Segments of the run made by processes other than this one (the worker ranks)."""
    assert ex._plane is not None
    own = f"{ex._plane.prefix}-{os.getpid()}-"
    return [n for n in run_files(ex._plane.prefix + "-") if not n.startswith(own)]


@pytest.fixture(scope="module")
def ex2(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with executor(tmp_path_factory.mktemp("shm"), max_ranks=2) as ex:
        yield ex


@pytest.mark.timeout(120)
@pytest.mark.parametrize("size", [MB, 64 * MB])
def test_arrays_round_trip_through_shared_memory(ex2: Executor, size: int) -> None:
    assert ex2._plane is not None  # on by default for the local block
    a = np.random.default_rng(size).random(size // 8)
    back = ex2.submit(echo, a).result(timeout=60)
    np.testing.assert_array_equal(back, a)
    assert back.flags.writeable
    # both directions used segments: ours for the argument, a worker rank's for the result
    assert any(s.capacity >= size for s in ex2._plane.arena.segments)
    assert worker_segments(ex2)
    assert ex2._plane.arena.in_use() == 0  # the argument was freed when the result came


@pytest.mark.timeout(120)
def test_several_large_tasks_at_once(ex2: Executor) -> None:
    arrays = [np.full(4 * MB, i, np.int32) for i in range(6)]
    futures = [ex2.submit(scaled, a, 3) for a in arrays]
    for i, f in enumerate(futures):
        out = f.result(timeout=60)
        assert out.shape == (4 * MB,) and out.dtype == np.int32
        assert int(out[0]) == 3 * i and int(out[-1]) == 3 * i and (out == 3 * i).all()
    assert ex2._plane is not None and ex2._plane.arena.in_use() == 0


@pytest.mark.timeout(120)
def test_bytearray_and_non_contiguous_array(ex2: Executor) -> None:
    raw = bytearray(os.urandom(3 * MB))
    back = ex2.submit(echo, raw).result(timeout=60)
    assert type(back) is bytearray and back == raw
    strided = np.arange(8 * MB // 8, dtype=np.float64).reshape(1024, -1)[:, ::3]
    out = ex2.submit(echo, strided).result(timeout=60)
    np.testing.assert_array_equal(out, strided)


@pytest.mark.timeout(120)
def test_every_rank_of_a_task_reads_the_same_argument(ex2: Executor) -> None:
    a = np.ones(2 * MB // 8)
    sums = ex2.requirements(num_ranks=2).submit(checksum, a).result(timeout=60)
    assert sums == [float(a.sum())] * 2


@pytest.mark.timeout(120)
def test_each_rank_of_a_task_writes_only_its_own_copy(ex2: Executor) -> None:
    a = np.ones(2 * MB // 8)
    sums = ex2.requirements(num_ranks=2).submit(scribble_then_sum, a).result(timeout=60)
    assert sums == [-float(a.size), float(a.size)]


@pytest.mark.timeout(120)
def test_a_result_kept_by_the_caller_stays_intact(ex2: Executor) -> None:
    first = np.random.default_rng(1).random(4 * MB // 8)
    kept = ex2.submit(echo, first).result(timeout=60)
    segments = worker_segments(ex2)
    assert states(segments).count(shm_run.LENT) == 1  # read in place, no copy
    for k in range(4):  # later results go to other segments of the rank
        np.testing.assert_array_equal(ex2.submit(scaled, first, k).result(timeout=60), first * k)
    np.testing.assert_array_equal(kept, first)
    del kept
    assert shm_run.LENT not in states(worker_segments(ex2))


@pytest.mark.timeout(120)
def test_an_argument_kept_by_its_task_stays_intact(tmp_path: Path) -> None:
    with executor(tmp_path, max_ranks=1) as ex:
        assert ex._plane is not None
        arrays = [np.full(2 * MB // 8, float(i)) for i in range(1, 4)]
        assert ex.submit(keep_or_sum, arrays[0]).result(timeout=60) is None
        assert ex._plane.arena.lent() == 1  # the task's rank still reads it in place
        for a in arrays[1:]:  # later arguments go to other segments, not over the kept one
            np.testing.assert_array_equal(ex.submit(echo, a).result(timeout=60), a)
        assert ex._plane.arena.lent() == 1
        assert ex.submit(keep_or_sum).result(timeout=60) == float(arrays[0].sum())


@pytest.mark.timeout(120)
def test_a_result_held_past_shutdown_stays_readable_and_nothing_is_left(tmp_path: Path) -> None:
    a = np.random.default_rng(3).random(4 * MB // 8)
    with executor(tmp_path) as ex:
        assert ex._plane is not None
        prefix = ex._plane.prefix
        kept = ex.submit(echo, a).result(timeout=60)
    assert run_files(prefix) == []  # every segment unlinked, the borrowed one too
    np.testing.assert_array_equal(kept, a)  # its pages live while the caller holds it
    kept[:] = 0.0
    assert not kept.any()


@pytest.mark.timeout(120)
def test_a_descriptor_naming_no_segment_fails_the_task(ex2: Executor,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert ex2._plane is not None
    bogus = shm.Descriptor(shm.HOST, f"{ex2._plane.prefix}-1-999999", shm.HEADER, MB, 1, 0)
    monkeypatch.setattr(ex2._plane, "publish_args",
                        lambda task_id, buffers: [bogus.encode() for _ in buffers])
    future = ex2.submit(echo, np.ones(MB // 8))
    with pytest.raises(SharedMemoryError, match="cannot be opened") as info:
        future.result(timeout=60)
    assert info.value.segment == bogus.name
    monkeypatch.undo()
    np.testing.assert_array_equal(ex2.submit(echo, np.ones(MB // 8)).result(timeout=60),
                                  np.ones(MB // 8))  # the pool is fine


@pytest.mark.timeout(120)
def test_shared_memory_off_sends_messages(tmp_path: Path) -> None:
    with executor(tmp_path, shared_memory=False) as ex:
        assert ex._plane is None and not ex.pool_config.shared_memory
        a = np.arange(64 * MB // 8, dtype=np.int64)
        np.testing.assert_array_equal(ex.submit(echo, a).result(timeout=60), a)


def test_bad_shared_memory_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="shared_memory must be True, False or None"):
        Executor(shared_memory="auto", run_dir=str(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shared_memory_cap"):
        Executor(shared_memory_cap=-1, run_dir=str(tmp_path))


@pytest.mark.timeout(120)
def test_no_segments_remain_after_a_normal_run(tmp_path: Path) -> None:
    with executor(tmp_path) as ex:
        assert ex._plane is not None
        prefix = ex._plane.prefix
        for _ in range(3):
            ex.submit(echo, np.ones(4 * MB)).result(timeout=60)
        assert worker_segments(ex) and run_files(prefix)
    assert run_files(prefix) == []


def leave_a_segment_and_die(prefix: str) -> None:
    """A rank killed while one of its segments still holds an unread buffer."""
    arena = shm.Arena(prefix)
    arena.publish([np.ones(MB, np.uint8)], reader_frees=True)
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.timeout(120)
def test_no_segments_remain_after_a_pool_kill(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # without keepers a rank's death ends its whole block, as under a launcher that kills the
    # job on any exit: the segments of the block's ranks are then swept
    monkeypatch.setenv("RANKPOOL_NO_KEEPER", "1")
    with executor(tmp_path) as ex:
        assert ex._plane is not None
        prefix = ex._plane.prefix
        ex.submit(echo, np.ones(4 * MB)).result(timeout=60)
        before = set(worker_segments(ex))
        assert before
        with pytest.raises(ManagerLost):
            ex.submit(leave_a_segment_and_die, prefix).result(timeout=60)
        # when the block's exit is seen, the dead ranks' free segments go at once ...
        wait_for(lambda: not before & set(worker_segments(ex)), timeout=30)
        # ... and the one holding an unread buffer stays until shutdown
        assert set(worker_segments(ex)) - before
        wait_for(lambda: "1" in ex._blocks.procs, timeout=30)  # type: ignore[union-attr]
        out = ex.submit(echo, np.ones(4 * MB)).result(timeout=60)  # the new block uses the plane
        assert out.shape == (4 * MB,)
    assert run_files(prefix) == []
