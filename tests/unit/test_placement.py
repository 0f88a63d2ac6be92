"""Unit tests for rankpool.mpi_pool.placement.scheduler (the manager's task scheduler)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Hashable

import pytest

from rankpool.mpi_pool.placement.scheduler import Assignment, Scheduler, Shape

ONE = Shape(1)


def _assign(s: Scheduler) -> dict[Hashable, tuple[int, ...]]:
    out, impossible = s.assign()
    assert impossible == []
    return {a.key: a.ranks for a in out}


def _nodes_used(s: Scheduler, ranks: tuple[int, ...]) -> Counter[int]:
    return Counter(s.node_of(r) for r in ranks)


# ---- 1-rank tasks ---------------------------------------------------------------------

def test_eight_tasks_spread_two_per_rank() -> None:
    s = Scheduler([[1, 2], [3, 4]], depth=16)
    for k in range(8):
        s.submit(k, ONE)
    got = _assign(s)
    assert len(got) == 8
    assert Counter(r for (r,) in got.values()) == {1: 2, 2: 2, 3: 2, 4: 2}
    assert s.pending == 0 and s.running == 8 and s.busy_ranks == 4 and s.free_ranks == 0


def test_lone_task_goes_to_one_rank_alone() -> None:
    s = Scheduler([[1, 2], [3, 4]], depth=16)
    s.submit("a", ONE)
    assert _assign(s) == {"a": (1,)}
    assert s.busy_ranks == 1 and s.free_ranks == 3


def test_lone_task_prefers_least_loaded_rank() -> None:
    s = Scheduler([[1, 2, 3]], depth=4)
    for k in range(6):
        s.submit(k, ONE)
    _assign(s)  # 2 per rank
    s.finish(2)
    s.finish(3)  # rank 2 now holds nothing
    s.submit("x", ONE)
    assert _assign(s) == {"x": (2,)}


def test_held_back_rank_takes_nothing_more_until_its_tasks_end() -> None:
    s = Scheduler([[1, 2]], depth=4)
    s.submit("long", ONE)
    assert _assign(s) == {"long": (1,)}
    s.hold_back(1)
    assert s.held_back(1) and s.holding(1) == 1
    for k in range(6):
        s.submit(k, ONE)
    got = _assign(s)
    assert set(got.values()) == {(2,)} and len(got) == 4 and s.pending == 2  # rank 2's depth
    s.finish("long")  # rank 1 is between tasks again: the hold lapses
    assert not s.held_back(1)
    assert set(_assign(s).values()) == {(1,)} and s.pending == 0
    s.hold_back(2, False)
    s.hold_back(2, True)
    s.finish_many([k for k, r in got.items() if r == (2,)])
    assert not s.held_back(2) and s.holding(2) == 0
    s.hold_back(2)  # a rank holding nothing has nothing to hold back
    assert not s.held_back(2)


def test_depth_respected_and_finish_frees_slot() -> None:
    s = Scheduler([[1]], depth=3)
    for k in range(5):
        s.submit(k, ONE)
    assert list(_assign(s)) == [0, 1, 2]
    assert _assign(s) == {}
    assert s.pending == 2
    assert s.finish(1) == (1,)
    assert _assign(s) == {3: (1,)}
    assert s.running == 3


def test_flood_is_capped_by_depth_and_fair_share() -> None:
    s = Scheduler([[1, 2, 3, 4]], depth=16)
    for k in range(100):
        s.submit(k, ONE)
    got = _assign(s)
    assert Counter(r for (r,) in got.values()) == {1: 16, 2: 16, 3: 16, 4: 16}
    for key in got:
        s.finish(key)
    got = _assign(s)  # 36 left over 4 ranks: 9 each
    assert Counter(r for (r,) in got.values()) == {1: 9, 2: 9, 3: 9, 4: 9}


# ---- exclusive placement ----------------------------------------------------------------

def test_width_fits_one_node_best_fit() -> None:
    s = Scheduler([[1, 2, 3, 4], [5, 6, 7]], depth=4)
    s.submit("w", Shape(3))
    assert _assign(s) == {"w": (5, 6, 7)}  # the fuller node that still fits
    s.submit("v", Shape(3))
    assert _assign(s) == {"v": (1, 2, 3)}


def test_best_fit_ties_go_to_lower_node() -> None:
    s = Scheduler([[1, 2, 3], [4, 5, 6]], depth=4)
    s.submit("w", Shape(2))
    assert _assign(s) == {"w": (1, 2)}
    s.submit("v", Shape(2))
    assert _assign(s) == {"v": (4, 5)}  # node 0 has 1 free rank left: no fit


def test_width_spans_nodes_largest_first() -> None:
    s = Scheduler([[1, 2], [3, 4, 5], [6, 7]], depth=4)
    s.submit("w", Shape(6))
    ranks = _assign(s)["w"]
    assert ranks == (1, 2, 3, 4, 5, 6)
    assert _nodes_used(s, ranks) == {0: 2, 1: 3, 2: 1}


def test_ranks_per_node_two_by_two() -> None:
    s = Scheduler([[1, 2], [3, 4]], depth=4)
    s.submit("w", Shape(4, ranks_per_node=2))
    assert _assign(s) == {"w": (1, 2, 3, 4)}


def test_ranks_per_node_picks_best_fit_nodes() -> None:
    s = Scheduler([[1, 2, 3], [4, 5, 6], [7, 8]], depth=4)
    s.submit("w", Shape(4, ranks_per_node=2))
    ranks = _assign(s)["w"]
    assert ranks == (1, 2, 7, 8)
    assert set(_nodes_used(s, ranks).values()) == {2}


def test_num_nodes_only_splits_evenly() -> None:
    s = Scheduler([[1, 2, 3, 4], [5, 6, 7, 8]], depth=4)
    s.submit("w", Shape(5, num_nodes=2))
    ranks = _assign(s)["w"]
    assert len(ranks) == 5 and sorted(_nodes_used(s, ranks).values()) == [2, 3]


def test_num_nodes_forces_spanning_even_if_one_node_fits() -> None:
    s = Scheduler([[1, 2, 3, 4], [5, 6, 7, 8]], depth=4)
    s.submit("w", Shape(4, ranks_per_node=2, num_nodes=2))
    ranks = _assign(s)["w"]
    assert _nodes_used(s, ranks) == {0: 2, 1: 2}


def test_exclusive_tasks_never_share_ranks() -> None:
    s = Scheduler([[1, 2], [3, 4]], depth=8)
    s.submit("e", Shape(1, exclusive=True))
    s.submit("w", Shape(2))
    got = _assign(s)
    assert got["e"] == (1,) and got["w"] == (3, 4)  # best fit for w is node 1 (2 free)
    for k in range(8):
        s.submit(k, ONE)
    got = _assign(s)
    assert {r for (r,) in got.values()} == {2}
    assert len(got) == 8  # depth
    s.submit("e2", Shape(1, exclusive=True))
    assert _assign(s) == {}  # every rank holds something
    s.finish("e")
    assert _assign(s) == {"e2": (1,)}
    s.finish("w")
    s.submit(8, ONE)
    s.submit(9, ONE)
    assert _assign(s) == {8: (3,), 9: (4,)}


def test_exclusive_waits_for_prefetched_tasks_to_drain() -> None:
    s = Scheduler([[1]], depth=4)
    s.submit(0, ONE)
    s.submit(1, ONE)
    _assign(s)
    s.submit("e", Shape(1, exclusive=True))
    s.submit(2, ONE)  # later, same priority: must not jump ahead onto the reserved rank
    assert _assign(s) == {}
    s.finish(0)
    assert _assign(s) == {}
    s.finish(1)
    assert _assign(s) == {"e": (1,)}
    s.finish("e")
    assert _assign(s) == {2: (1,)}


# ---- ordering, backfill, reservation --------------------------------------------------

def test_priority_order() -> None:
    s = Scheduler([[1]], depth=1)
    s.submit("low", ONE, priority=0)
    s.submit("high", ONE, priority=5)
    s.submit("mid", Shape(1, exclusive=True), priority=2)
    order = []
    for _ in range(3):
        (key,) = _assign(s)
        order.append(key)
        s.finish(key)
    assert order == ["high", "mid", "low"]


def test_fifo_within_priority_across_shapes() -> None:
    s = Scheduler([[1, 2]], depth=4, lend=0)  # strict reservation
    s.submit(0, ONE)
    s.submit("w", Shape(2))
    s.submit(1, ONE)
    got = _assign(s)
    assert got == {0: (1,)}  # w is next and reserved both ranks: 1 must wait
    s.finish(0)
    assert _assign(s) == {"w": (1, 2)}


def test_backfill_narrow_task_runs_while_wide_is_blocked() -> None:
    s = Scheduler([[1, 2, 3], [4, 5, 6]], depth=1, lend=0)  # strict reservation
    s.submit("x", Shape(3, num_nodes=1))
    s.submit("b", Shape(1, exclusive=True))
    assert _assign(s) == {"x": (1, 2, 3), "b": (4,)}
    s.finish("x")
    s.submit("a", ONE)
    assert _assign(s) == {"a": (1,)}
    # node 0 has ranks 2, 3 free, node 1 has 5, 6: the 3-rank single-node task is blocked
    s.submit("wide", Shape(3, num_nodes=1), priority=10)
    s.submit("narrow", Shape(2), priority=0)
    assert _assign(s) == {"narrow": (5, 6)}  # backfilled; wide reserved node 0
    s.submit("one", ONE)  # rank 2, 3 are idle but reserved
    assert _assign(s) == {}
    s.finish("a")
    assert _assign(s) == {"wide": (1, 2, 3)}


def test_reservation_recomputed_when_reserved_rank_gets_stuck() -> None:
    s = Scheduler([[1, 2], [3, 4]], depth=1)
    for k in range(4):
        s.submit(k, ONE)
    _assign(s)
    s.submit("w", Shape(2))
    assert _assign(s) == {}
    s.finish(0)
    s.finish(1)  # node 0 is free: w (reserved there) starts
    assert _assign(s) == {"w": (1, 2)}
    s.finish("w")
    s.submit(5, ONE)
    s.submit(6, ONE)
    _assign(s)  # 5 -> 1, 6 -> 2
    s.submit("v", Shape(2))
    assert _assign(s) == {}
    s.mark_stuck([1])
    s.finish(2)
    s.finish(3)
    assert _assign(s) == {"v": (3, 4)}


# ---- stuck ranks, impossible tasks, cancel ----------------------------------------------

def test_stuck_ranks_never_assigned_and_unstick_restores() -> None:
    s = Scheduler([[1, 2], [3, 4]], depth=2)
    s.mark_stuck([2, 3])
    assert s.usable_ranks == 2 and s.free_ranks == 2
    for k in range(20):
        s.submit(k, ONE)
    got = _assign(s)
    assert {r for (r,) in got.values()} == {1, 4}
    s.unstick([2, 3])
    assert s.usable_ranks == 4
    got = _assign(s)
    assert {r for (r,) in got.values()} == {2, 3}


def test_task_that_no_longer_fits_is_impossible() -> None:
    s = Scheduler([[1, 2], [3, 4]], depth=2)
    for k in range(4):
        s.submit(k, ONE)
    assert _assign(s) == {0: (1,), 1: (2,), 2: (3,), 3: (4,)}
    s.submit("w", Shape(2, num_nodes=1))
    assert _assign(s) == {}  # blocked, reserves a node
    s.mark_stuck([1, 4])  # no node has 2 usable ranks any more
    assert not s.fits_ever(Shape(2, num_nodes=1))
    out, imp = s.assign()
    assert imp == ["w"] and out == []
    assert s.pending == 0 and s.usable_ranks == 2 and s.busy_ranks == 2
    assert s.finish(0) == (1,)  # its slot was dropped with the stuck rank
    for k in (1, 2, 3):
        s.finish(k)
    s.unstick([1, 4])
    assert s.fits_ever(Shape(2, num_nodes=1))
    s.submit("w2", Shape(2, num_nodes=1))
    assert _assign(s) == {"w2": (1, 2)}


def test_impossible_shapes_reported_without_blocking() -> None:
    s = Scheduler([[1, 2], [3, 4]], depth=2)
    s.submit("bad", Shape(3, ranks_per_node=3))
    s.submit("zero", Shape(0))
    s.submit("ok", ONE)
    out, imp = s.assign()
    assert set(imp) == {"bad", "zero"} and out == [Assignment("ok", (1,))]


def test_cancel_removes_pending_task() -> None:
    s = Scheduler([[1]], depth=1)
    s.submit(1, ONE)
    s.submit(2, ONE)
    s.submit(3, ONE)
    assert s.cancel(2) is True
    assert s.cancel(2) is False
    assert s.pending == 2
    seen = []
    for _ in range(3):
        got = _assign(s)
        seen += list(got)
        for k in got:
            s.finish(k)
    assert seen == [1, 3]
    s.submit(2, ONE)  # the key may be reused after cancel
    assert _assign(s) == {2: (1,)}


def test_cancel_reserved_task_releases_ranks() -> None:
    s = Scheduler([[1, 2]], depth=2)
    s.submit(0, ONE)
    _assign(s)
    s.submit("w", Shape(2))
    _assign(s)
    assert s.cancel("w")
    s.submit(1, ONE)
    assert _assign(s) == {1: (2,)}


def test_fits_ever() -> None:
    s = Scheduler([[1, 2, 3], [4, 5], []], depth=2)
    assert s.fits_ever(Shape(5))
    assert not s.fits_ever(Shape(6))
    assert s.fits_ever(Shape(3, num_nodes=1))
    assert not s.fits_ever(Shape(4, ranks_per_node=4))  # larger than the largest node
    assert not s.fits_ever(Shape(3, ranks_per_node=2))  # does not divide
    assert not s.fits_ever(Shape(4, ranks_per_node=2, num_nodes=3))  # inconsistent
    assert not s.fits_ever(Shape(2, num_nodes=3))  # only 2 non-empty nodes
    assert not s.fits_ever(Shape(1, num_nodes=2))
    assert not s.fits_ever(Shape(0))
    assert not s.fits_ever(Shape(4, ranks_per_node=2, exclusive=True, gpus=1))  # no devices
    g = Scheduler([[1, 2, 3], [4, 5], []], depth=2, devices=[1, 2, 4, 5])
    assert g.fits_ever(Shape(4, ranks_per_node=2, exclusive=True, gpus=1))
    assert not g.fits_ever(Shape(3, num_nodes=1, exclusive=True, gpus=1))
    assert not g.fits_ever(Shape(1, exclusive=True, gpus=2))  # one device per rank


def test_a_run_of_keys_is_queued_in_order_or_not_at_all() -> None:
    s = Scheduler([[1]], depth=1)
    s.submit_many(["a", "b"], ONE)
    s.submit("c", ONE)
    s.submit_many([], ONE)
    with pytest.raises(ValueError, match="'b' is already live"):
        s.submit_many(["x", "b"], ONE)
    with pytest.raises(ValueError, match="repeats"):
        s.submit_many(["y", "z", "y"], ONE)
    assert s.pending == 3  # neither failed run left a key behind
    order = []
    for _ in range(3):
        got = _assign(s)
        order += list(got)
        s.finish_many(list(got))
    assert order == ["a", "b", "c"]
    s.submit_many(["y", "z"], ONE)  # the keys of the refused runs are free
    assert s.pending == 2


def test_errors_and_node_of() -> None:
    s = Scheduler([[1, 2], [3]], depth=2)
    assert [s.node_of(r) for r in (1, 2, 3)] == [0, 0, 1]
    s.submit(1, ONE)
    with pytest.raises(ValueError):
        s.submit(1, ONE)
    _assign(s)
    with pytest.raises(ValueError):
        s.submit(1, Shape(2))  # still running
    with pytest.raises(KeyError):
        s.finish(99)
    with pytest.raises(ValueError):
        Scheduler([[0, 1]])
    with pytest.raises(ValueError):
        Scheduler([[1]], depth=0)
    assert s.ranks_of(1) == (1,)
    s.finish(1)
    with pytest.raises(KeyError):
        s.ranks_of(1)


# ---- randomized invariants ----------------------------------------------------------------

def _check_shape(s: Scheduler, shape: Shape, ranks: tuple[int, ...]) -> None:
    assert len(ranks) == shape.width and list(ranks) == sorted(set(ranks))
    per = _nodes_used(s, ranks)
    if shape.ranks_per_node is not None:
        assert set(per.values()) == {shape.ranks_per_node}
    if shape.num_nodes is not None:
        assert len(per) == shape.num_nodes
        assert max(per.values()) - min(per.values()) <= 1


def _shared_on(on_rank: dict[int, set[Hashable]], shape_of: dict[Hashable, Shape],
               rank: int) -> bool:
    return any(shape_of[k].width == 1 and not shape_of[k].exclusive
               for k in on_rank.get(rank, ()))


@pytest.mark.parametrize("lend", [0, 2])
@pytest.mark.parametrize("seed", range(8))
def test_randomized_invariants(seed: int, lend: int) -> None:
    rng = random.Random(seed)
    nodes: list[list[int]] = []
    r = 1
    for _ in range(rng.randint(2, 4)):
        n = rng.randint(0 if nodes else 2, 6)
        nodes.append(list(range(r, r + n)))
        r += n
    depth = rng.randint(1, 5)
    s = Scheduler(nodes, depth, lend=lend)
    shapes = [ONE] * 6 + [Shape(1, exclusive=True), Shape(2), Shape(3), Shape(4, ranks_per_node=2),
                          Shape(3, num_nodes=2), Shape(2, ranks_per_node=1, num_nodes=2), Shape(7)]
    shape_of: dict[Hashable, Shape] = {}
    on_rank: dict[int, set[Hashable]] = {}  # model: live keys per rank
    assigned: set[Hashable] = set()
    impossible: set[Hashable] = set()
    cancelled: set[Hashable] = set()
    running: list[Hashable] = []
    stuck: set[int] = set()
    held_back: set[int] = set()

    def step() -> None:
        out, imp = s.assign()
        for k in imp:
            assert k not in assigned
            assert not s.fits_ever(shape_of[k])
            impossible.add(k)
        for a in out:
            assert a.key not in assigned and a.key not in cancelled
            assigned.add(a.key)
            running.append(a.key)
            shape = shape_of[a.key]
            _check_shape(s, shape, a.ranks)
            excl = shape.width > 1 or shape.exclusive
            for rk in a.ranks:
                assert rk not in stuck
                held = on_rank.setdefault(rk, set())
                assert not (held and rk in held_back), "a task queued on a held-back rank"
                assert not held or not excl
                assert not any(shape_of[o].width > 1 or shape_of[o].exclusive for o in held)
                assert len(held) < s.depth, "a task beyond the depth"
                held.add(a.key)
        assert s.busy_ranks == sum(1 for rk, h in on_rank.items() if h)
        assert s.running == len(running)
        inv = s._inv  # its counters match a count from scratch
        assert inv.n_open == sum(inv.is_open(rk, inv.held[rk]) for rk in range(1, r))

    for key in range(3000):
        op = rng.random()
        if op < 0.5:
            shape, priority = rng.choice(shapes), rng.choice((0, 0, 0, 1, 2))
            if rng.random() < 0.7:
                shape_of[key] = shape
                s.submit(key, shape, priority=priority)
            else:  # a batch's run of tasks, queued at once
                run = [key, *(f"{key}.{i}" for i in range(rng.randint(0, 7)))]
                shape_of.update(dict.fromkeys(run, shape))
                s.submit_many(run, shape, priority=priority)
        elif op < 0.85 and running:
            # one task ends, or several reported together (finish_many frees each rank's
            # shared tasks at once)
            ended = [running.pop(rng.randrange(len(running)))
                     for _ in range(min(len(running), rng.choice((1, 1, 2, 5))))]
            ranks_of = {k: s.ranks_of(k) for k in ended}
            if len(ended) == 1 and rng.random() < 0.5:
                assert s.finish(ended[0]) == ranks_of[ended[0]]
            else:
                s.finish_many(ended)
            for k, ranks in ranks_of.items():
                for rk in ranks:
                    on_rank.get(rk, set()).discard(k)
                    if not _shared_on(on_rank, shape_of, rk):
                        held_back.discard(rk)  # between tasks: the hold lapses
        elif op < 0.9 and shape_of:
            k = rng.choice(list(shape_of))
            if s.cancel(k):
                cancelled.add(k)
        elif op < 0.92:
            rk = rng.randint(1, r - 1)
            if rk in stuck:
                s.unstick([rk])
                stuck.discard(rk)
            elif len(stuck) < 2:
                s.mark_stuck([rk])
                stuck.add(rk)
                held_back.discard(rk)
                on_rank.pop(rk, None)
        elif op < 0.935:  # rank 0 queues more, or fewer, per rank (see mpi_pool.prefetch)
            s.set_depth(rng.randint(1, 6))
        elif op < 0.94:
            rk = rng.randint(1, r - 1)
            on = rk not in held_back
            s.hold_back(rk, on)
            if not on:
                held_back.discard(rk)
            elif rk not in stuck and _shared_on(on_rank, shape_of, rk):
                held_back.add(rk)  # a rank holding no 1-rank task has nothing to hold back
        assert all(s.held_back(rk) == (rk in held_back) for rk in range(1, r))
        step()

    s.unstick(sorted(stuck))
    stuck.clear()
    for rk in sorted(held_back):
        s.hold_back(rk, False)
    held_back.clear()
    for _ in range(10000):
        if not s.pending and not running:
            break
        step()
        for k in running:
            for rk in s.ranks_of(k):
                on_rank.get(rk, set()).discard(k)
        s.finish_many(running)
        running.clear()
    assert s.pending == 0
    assert assigned | impossible | cancelled == set(shape_of)
    assert not assigned & impossible and not assigned & cancelled
    assert s.free_ranks == s.usable_ranks == sum(map(len, nodes))


def test_a_shape_queue_that_emptied_is_not_reused_by_the_next_task_of_its_shape() -> None:
    """Once a queue's tasks all started it is gone, and the next task of the same Shape and
    priority gets a live queue; a run of tasks joins the live queue of its shape."""
    from rankpool.mpi_pool.placement.queues import PendingTasks
    pending, shape = PendingTasks(), Shape(1)
    pending.add(["a"], shape, 0)
    first = pending.index[(0, shape)]
    pending.add(["b"], shape, 0)
    assert pending.index[(0, shape)] is first and first.live == 2
    pending.take("a")
    pending.take("b")  # emptied: dropped
    assert (0, shape) not in pending.index and first.qid not in pending.queues
    pending.add(["c"], shape, 0)
    again = pending.index[(0, shape)]
    assert again is not first and pending.queues[again.qid] is again
    assert list(again.items) == [(2, "c")]
    pending.add(["d"], shape, 1)
    assert pending.index[(1, shape)] is not again  # another priority, another queue
    pending.add(["e", "f"], Shape(1), 0)  # an equal Shape finds it by its hash
    assert list(again.items) == [(2, "c"), (4, "e"), (5, "f")] and again.live == 3
    assert pending.pending["f"] == (again.qid, 5)


def test_a_shape_that_never_fits_is_refused_with_what_it_needs_and_what_the_pool_has() -> None:
    s = Scheduler([[1, 2], [3]], depth=2, devices=[1])
    s.mark_stuck([3])
    err = s.never_fits(7, Shape(3, ranks_per_node=3))
    assert err.key == "num_ranks" and str(err).endswith(
        "task 7 needs 3 ranks (3 per node); this pool has 2 usable worker ranks on nodes of "
        "[2, 1] worker ranks")
    err = s.never_fits(8, Shape(2, exclusive=True, gpus=1))
    assert err.key == "gpus_per_rank" and str(err).endswith(
        "task 8 needs 2 GPU ranks; this pool has 1 usable worker rank that own an accelerator "
        "on nodes of [2, 1] worker ranks")
