"""Device-aware placement: GPU tasks only on ranks that own an accelerator, one task per
rank (so per device with one rank per device), other tasks kept off device ranks."""

from __future__ import annotations

import random
from collections.abc import Hashable

from rankpool.mpi_pool.placement.scheduler import Scheduler, Shape

GPU = Shape(1, exclusive=True, gpus=1)
CPU = Shape(1)


def _assign(s: Scheduler) -> dict[Hashable, tuple[int, ...]]:
    out, impossible = s.assign()
    assert impossible == []
    return {a.key: a.ranks for a in out}


def test_gpu_tasks_take_only_device_ranks_one_at_a_time() -> None:
    s = Scheduler([[1, 2, 3, 4]], depth=8, devices=[1, 2])
    for k in range(5):
        s.submit(k, GPU)
    got = _assign(s)
    assert sorted(got.values()) == [(1,), (2,)]  # two devices, two tasks; the rest wait
    assert s.pending == 3
    s.finish(next(iter(got)))
    assert list(_assign(s).values()) == [got[next(iter(got))]]


def test_cpu_tasks_prefer_device_less_ranks() -> None:
    s = Scheduler([[1, 2, 3, 4]], depth=8, devices=[1, 2])
    s.submit("a", CPU)
    s.submit("b", CPU)
    assert sorted(_assign(s).values()) == [(3,), (4,)]
    s.submit("x", Shape(2, exclusive=True))
    s.finish("a")
    s.finish("b")
    assert _assign(s) == {"x": (3, 4)}
    s.submit("y", Shape(1, exclusive=True))  # e.g. a task with a walltime
    assert _assign(s) == {"y": (1,)}  # only device ranks are idle: it may use one


def test_cpu_task_prefers_the_node_where_it_needs_no_device() -> None:
    s = Scheduler([[1, 2, 3], [4, 5, 6]], depth=4, devices=[1, 2, 4])
    s.submit("w", Shape(2, exclusive=True))
    assert _assign(s) == {"w": (5, 6)}


def test_multi_rank_gpu_task_prefers_one_node_and_never_device_less_ranks() -> None:
    s = Scheduler([[1, 2, 3], [4, 5, 6]], depth=4, devices=[1, 2, 4, 5])
    s.submit("g", Shape(2, exclusive=True, gpus=1))
    assert _assign(s) == {"g": (1, 2)}
    s.submit("h", Shape(2, exclusive=True, gpus=1))
    assert _assign(s) == {"h": (4, 5)}
    s.submit("i", Shape(1, exclusive=True, gpus=1))
    assert _assign(s) == {}  # ranks 3 and 6 are idle but own no device


def test_wide_gpu_task_gets_a_reservation_against_narrow_ones() -> None:
    s = Scheduler([[1, 2, 3]], depth=4, devices=[1, 2], lend=0)  # strict reservation
    s.submit("a", GPU)
    assert _assign(s) == {"a": (1,)}
    s.submit("wide", Shape(2, exclusive=True, gpus=1))
    s.submit("b", GPU)
    assert _assign(s) == {}  # rank 2 is kept for the wide task
    s.finish("a")
    assert _assign(s) == {"wide": (1, 2)}


def test_reserved_device_rank_is_lent_to_a_gpu_task_within_the_budget() -> None:
    s = Scheduler([[1, 2, 3]], depth=4, devices=[1, 2], lend=1)
    s.submit("a", GPU)
    assert _assign(s) == {"a": (1,)}
    s.submit("wide", Shape(2, exclusive=True, gpus=1))
    s.submit("b", GPU)
    s.submit("c", GPU)
    s.submit("x", CPU)
    assert _assign(s) == {"b": (2,), "x": (3,)}  # rank 2 lent once; x stays off devices
    s.finish("b")
    assert _assign(s) == {}  # rank 2's budget is spent: c waits
    s.finish("a")
    assert _assign(s) == {"wide": (1, 2)}
    s.finish("wide")
    assert _assign(s) == {"c": (1,)}


def test_impossible_gpu_tasks_are_drained_when_device_ranks_get_stuck() -> None:
    s = Scheduler([[1, 2]], depth=4, devices=[1])
    s.submit("a", GPU)
    assert _assign(s) == {"a": (1,)}
    s.mark_stuck([1])
    s.submit("b", GPU)
    out, impossible = s.assign()
    assert out == [] and impossible == ["b"]
    assert s.usable_device_ranks == 0
    s.unstick([1])
    assert s.usable_device_ranks == 1 and s.fits_ever(GPU)


def test_random_gpu_and_cpu_load_never_shares_a_device_rank() -> None:
    rng = random.Random(9)
    devices = {1, 2, 5, 6}
    s = Scheduler([[1, 2, 3, 4], [5, 6, 7]], depth=3, devices=devices)
    live: dict[int, tuple[tuple[int, ...], bool]] = {}
    gpu_of: dict[int, bool] = {}
    for k in range(400):
        gpu_of[k] = rng.random() < 0.4
        width = rng.choice([1, 1, 2])
        s.submit(k, Shape(width, exclusive=gpu_of[k] or width > 1, gpus=int(gpu_of[k])))
        for key, ranks in _assign(s).items():
            live[key] = (ranks, gpu_of[key])
            if gpu_of[key]:
                assert set(ranks) <= devices
        busy = [r for ranks, _ in live.values() for r in ranks]
        gpu_ranks = [r for ranks, gpu in live.values() if gpu for r in ranks]
        assert all(busy.count(r) == 1 for r in gpu_ranks)  # alone on its rank, its device
        for key in rng.sample(sorted(live), k=min(len(live), rng.randint(0, 3))):
            s.finish(key)
            del live[key]


def test_a_blocked_gpu_task_stops_cpu_tasks_landing_on_its_device() -> None:
    s = Scheduler([[1, 2]], depth=4, devices=[1])
    for k in range(2):
        s.submit(k, CPU)
    assert sorted(_assign(s).values()) == [(1,), (2,)]
    s.submit("g", GPU)
    s.submit("late", CPU)
    got = _assign(s)
    assert got == {"late": (2,)}  # rank 1 is reserved for the GPU task
    for k in (0, 1):
        if s.ranks_of(k) == (1,):
            s.finish(k)
    assert _assign(s) == {"g": (1,)}
