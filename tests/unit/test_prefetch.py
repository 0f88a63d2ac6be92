"""Rank 0's prefetch depth follows the run times its ranks report (rankpool.mpi_pool.prefetch),
and rank 0 sends a flood's tasks to a rank as one run and takes their values as columns."""

from __future__ import annotations

import pickle

import pytest
from mpi4py import MPI

from rankpool.mpi_pool.manager import Manager
from rankpool.mpi_pool.placement.scheduler import DEFAULT_DEPTH, Scheduler
from rankpool.mpi_pool.placement.shapes import Shape
from rankpool.mpi_pool.prefetch import CHECK_EVERY, FLOOR, WINDOW, Prefetch
from rankpool.mpi_pool.subcomms import Report, WorkItem, expand
from rankpool.protocol.batches import Task
from rankpool.task.resources import Spec


def test_starts_at_the_floor_and_never_passes_the_configured_depth() -> None:
    assert Prefetch(DEFAULT_DEPTH).depth == FLOOR < DEFAULT_DEPTH
    small = Prefetch(16)
    assert small.depth == 16
    small.ran(10_000, 1e-6)  # tasks that return at once
    assert small.update(1.0) is None and small.depth == 16


def test_short_tasks_deepen_it_and_long_ones_bring_it_back() -> None:
    p = Prefetch(256)
    p.ran(1000, 1000 * 4e-6)  # 4 µs a task: 256 of them run in 1 ms
    assert p.update(1.0) == 256
    p.ran(100, 100 * 30e-6)  # 30 µs: 256 queued run in 7.7 ms, under twice the window
    assert p.update(2.0) is None and p.depth == 256
    assert WINDOW < 256 * 30e-6 <= 2 * WINDOW
    p.ran(100, 100 * 70e-6)  # 70 µs: 256 would take 18 ms, 128 take 9
    assert p.update(3.0) == 128
    p.ran(100, 100 * 30e-6)  # shorter again: 256 run in 7.7 ms, more than the window
    assert p.update(4.0) is None
    p.ran(100, 100 * 15e-6)  # 15 µs: 256 run in 3.8 ms
    assert p.update(5.0) == 256
    p.ran(10, 10 * 0.01)  # 10 ms tasks: the floor
    assert p.update(6.0) == FLOOR


def test_it_looks_again_only_every_check_and_keeps_it_without_news() -> None:
    p = Prefetch(256)
    p.ran(1000, 1e-3)
    assert p.update(5.0) == 256
    p.ran(10, 1.0)
    assert p.update(5.0 + CHECK_EVERY / 2) is None  # too soon: the times wait
    assert p.update(5.0 + CHECK_EVERY * 1.01) == FLOOR
    assert p.update(6.0) is None  # no task ended since: as it was
    assert p.depth == FLOOR


def test_a_lower_depth_keeps_what_ranks_hold_and_gives_them_no_more() -> None:
    s = Scheduler([[1, 2]], depth=8)
    s.submit_many(list(range(40)), Shape(1))
    out, _ = s.assign()
    assert [s.holding(r) for r in (1, 2)] == [8, 8]
    s.set_depth(2)
    assert s.assign() == ([], [])  # both hold more than 2
    s.finish_many([a.key for a in out if a.ranks == (1,)][:7])  # rank 1 now holds 1
    more, _ = s.assign()
    assert [a.ranks for a in more] == [(1,)] and s.holding(1) == 2
    s.set_depth(16)
    while s.assign()[0]:  # each call hands a rank at most its share of what waits
        pass
    assert [s.holding(r) for r in (1, 2)] == [16, 16]
    with pytest.raises(ValueError):
        s.set_depth(0)


def _manager() -> Manager:
    from rankpool.mpi_pool.subcomms import Topology
    return Manager(MPI.COMM_WORLD, Topology([[1, 2]], ["host"], dict.fromkeys(range(3), "host")))


class _Outbox:
    """Keeps what the manager sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[object, int, int]] = []
        self.pending: list[object] = []

    def send(self, obj: object, dest: int, tag: int, buffers: object = ()) -> None:
        self.sent.append((obj, dest, tag))

    def poll(self) -> bool:
        return False


def test_a_flood_goes_to_each_rank_as_one_run_and_comes_back_as_columns() -> None:
    manager = _manager()
    manager.outbox = outbox = _Outbox()  # type: ignore[assignment]
    spec = Spec()
    tasks = [Task(i, spec, b"d" * 16, b"fn", pickle.dumps(((i,), {})), ()) for i in range(1, 101)]
    manager.submit_many(tasks)
    manager.manager_dispatch()
    by_rank = {dest: msg for msg, dest, _ in outbox.sent}
    assert sorted(by_rank) == [1, 2]
    items = {rank: [i for entry in msg for i in expand(entry)]  # type: ignore[attr-defined]
             for rank, msg in by_rank.items()}
    for rank, msg in by_rank.items():
        assert len(msg) == 1 and type(msg[0][0]) is list  # type: ignore[index]
        assert all(isinstance(i, WorkItem) and i.ranks == (rank,) for i in items[rank])
    sent = {i.task_id: i for rank in items for i in items[rank]}
    assert sorted(sent) == list(range(1, 101))
    assert all(pickle.loads(sent[t].data) == ((t,), {}) for t in sent)
    # each rank reports its values as columns, with the seconds they ran
    for rank in (1, 2):
        ids = [i.task_id for i in items[rank]]
        manager._take_report(rank, (Report([], (), (), False, (ids, [b"v"] * len(ids),
                                                                 len(ids) * 1e-6)), []))
    (ids, datas), results = manager.take_completed()
    assert sorted(ids) == list(range(1, 101)) and datas == [b"v"] * 100 and not results
    assert manager.outstanding == 0
    manager.prefetch._next_check = 0.0  # look now
    manager.check_depth()
    assert manager.scheduler.depth == DEFAULT_DEPTH  # 1 µs a task


def test_values_from_a_rank_that_does_not_hold_the_task_are_not_taken() -> None:
    manager = _manager()
    manager.outbox = _Outbox()  # type: ignore[assignment]
    manager.submit_many([Task(1, Spec(), b"d" * 16, b"fn", b"x", ())])
    manager.manager_dispatch()
    owner = manager.single[1]
    other = 3 - owner
    manager._take_report(other, (Report([], (), (), False, ([1], [b"v"], 0.0)), []))
    assert manager.single == {1: owner} and manager.take_completed() == (([], []), [])
    manager._take_report(owner, (Report([], (), (), False, ([1], [b"v"], 0.0)), []))
    assert manager.take_completed() == (([1], [b"v"]), [])


def test_a_run_too_large_for_one_message_goes_in_several_in_order() -> None:
    from rankpool.mpi_pool.subcomms import MESSAGE_BYTES
    manager = _manager()
    manager.outbox = outbox = _Outbox()  # type: ignore[assignment]
    spec = Spec()
    data = pickle.dumps(((b"x" * 300,), {}))
    manager.submit_many([Task(i, spec, b"d" * 16, b"fn", data, ()) for i in range(1, 61)])
    manager.manager_dispatch()
    per_rank: dict[int, list[object]] = {}
    for msg, dest, _ in outbox.sent:
        per_rank.setdefault(dest, []).append(msg)
    assert sorted(per_rank) == [1, 2]
    for messages in per_rank.values():
        assert len(messages) > 1  # 30 tasks of 300 B: more than MESSAGE_BYTES
        for msg in messages:
            assert len(pickle.dumps(msg)) <= MESSAGE_BYTES + 200
        ids = [i.task_id for msg in messages for e in msg  # type: ignore[attr-defined]
               for i in expand(e)]
        assert ids == sorted(ids) and len(ids) == 30


def test_a_run_of_large_arguments_goes_in_one_message() -> None:
    from rankpool.mpi_pool.subcomms import MESSAGE_BYTES
    from rankpool.mpi_pool.work_messages import MOST_MESSAGES
    from rankpool.mpi_pool.work_messages import cuts as _cuts
    small = _cuts([b"x" * 100] * 256, 300)  # 26 KB: a few messages, each under the budget
    assert 1 < len(small) <= MOST_MESSAGES and all(size <= MESSAGE_BYTES for *_, size in small)
    assert [(i, j) for i, j, _ in small] == list(zip([c[0] for c in small],
                                                     [c[0] for c in small[1:]] + [256]))
    large = _cuts([b"x" * 2000] * 256, 300)  # 512 KB: one message, not 256
    assert large == [(0, 256, 256 * 2010 + 300)]
