"""Lending reserved ranks: while a blocked wide task waits for its reservation, its idle ranks
run other tasks, each rank at most ``lend`` times per reservation; then the reservation is
strict, so the wide task waits at most ``lend`` extra tasks on any of its ranks."""

from __future__ import annotations

import random
from collections.abc import Hashable

import pytest

from rankpool.mpi_pool.placement.scheduler import DEFAULT_LEND, Scheduler, Shape

ONE = Shape(1)
EXCL = Shape(1, exclusive=True)


def _assign(s: Scheduler) -> dict[Hashable, tuple[int, ...]]:
    out, impossible = s.assign()
    assert impossible == []
    return {a.key: a.ranks for a in out}


def _blocked_pair(lend: int) -> Scheduler:
    """Two ranks: task 0 runs on rank 1, "w" (2 ranks) reserves both, 1-rank tasks 1..3 wait."""
    s = Scheduler([[1, 2]], depth=4, lend=lend)
    s.submit(0, ONE)
    assert _assign(s) == {0: (1,)}
    s.submit("w", Shape(2))
    for k in (1, 2, 3):
        s.submit(k, ONE)
    return s


def test_idle_reserved_rank_is_lent_one_task_at_a_time_then_kept() -> None:
    s = _blocked_pair(lend=2)
    assert _assign(s) == {1: (2,)}  # rank 2 idle and reserved: lent, one task (not depth)
    assert _assign(s) == {}
    s.finish(1)
    assert _assign(s) == {2: (2,)}  # lent a second time
    s.finish(2)
    assert _assign(s) == {}  # budget spent: rank 2 stays idle for w
    s.finish(0)
    assert _assign(s) == {"w": (1, 2)}
    s.finish("w")
    assert _assign(s) == {3: (1,)}


def test_lend_zero_is_a_strict_reservation() -> None:
    s = _blocked_pair(lend=0)
    assert _assign(s) == {}  # rank 2 is idle but reserved
    s.finish(0)
    assert _assign(s) == {"w": (1, 2)}


def test_reservation_starts_once_borrowed_tasks_end() -> None:
    s = _blocked_pair(lend=5)
    assert _assign(s) == {1: (2,)}
    s.finish(0)  # rank 1 idle, rank 2 still runs a borrowed task: w waits, rank 1 is lent
    assert _assign(s) == {2: (1,)}
    s.finish(1)
    s.finish(2)  # both idle: w starts before anything else is lent
    assert _assign(s) == {"w": (1, 2)}


def test_exclusive_tasks_borrow_after_free_ranks() -> None:
    s = Scheduler([[1, 2, 3, 4]], depth=4, lend=1)
    for k in "abce":
        s.submit(k, EXCL)
    assert _assign(s) == {"a": (1,), "b": (2,), "c": (3,), "e": (4,)}
    s.finish("a")
    s.finish("b")
    s.submit("w", Shape(3))
    assert _assign(s) == {}  # w reserves ranks 1, 2 (idle) and 3
    s.finish("e")  # rank 4: idle, not reserved
    s.submit("d", Shape(2), priority=1)
    assert _assign(s) == {"d": (1, 4)}  # the free rank first, one reserved rank borrowed
    s.submit("f", Shape(2), priority=1)
    s.finish("d")  # rank 1 spent its loan; rank 4 is free, rank 2 may still be lent
    assert _assign(s) == {"f": (2, 4)}
    s.finish("c")
    assert _assign(s) == {}  # ranks 1, 3 idle but 2 runs f
    s.finish("f")
    assert _assign(s) == {"w": (1, 2, 3)}


def test_multi_node_borrower_keeps_its_layout() -> None:
    s = Scheduler([[1, 2], [3, 4]], depth=4, lend=1)
    s.submit(0, ONE)
    assert _assign(s) == {0: (1,)}
    s.submit("w", Shape(4))  # reserves all four ranks
    s.submit("x", Shape(2, ranks_per_node=1))
    s.submit("y", Shape(2, num_nodes=1))
    assert _assign(s) == {"x": (2, 3)}  # one rank per node; y finds no node with 2 idle
    s.finish("x")
    assert _assign(s) == {}  # ranks 2, 3 were lent once; rank 4 alone cannot take y
    s.finish(0)
    assert _assign(s) == {"w": (1, 2, 3, 4)}


@pytest.mark.parametrize("lend", [0, 1, 2, 3])
@pytest.mark.parametrize("seed", [None, 1, 2, 3])
def test_wide_task_waits_at_most_lend_tasks_per_rank(lend: int, seed: int | None) -> None:
    """An endless stream of 1-rank tasks (one ends, oldest first or at random, one arrives
    per round): the 6-rank task starts once the 12 tasks its ranks held and at most ``lend``
    loans per rank have ended; the stream runs on ranks 7 and 8 meanwhile (lend=0: only
    there, a strict reservation)."""
    s = Scheduler([[1, 2, 3, 4], [5, 6, 7, 8]], depth=2, lend=lend)
    rng = random.Random(seed)
    nxt = 0
    for _ in range(16):
        s.submit(nxt, ONE)
        nxt += 1
    running = list(_assign(s))
    on: dict[Hashable, int] = {}
    s.submit("wide", Shape(6))
    loans: dict[int, int] = {}
    ended_on_wide_ranks: list[Hashable] = []
    for rounds in range(1, 500):  # noqa: B007  (read after the loop: the rounds it took)
        got = _assign(s)
        if "wide" in got:
            break
        for k, (r,) in got.items():
            on[k] = r
            if r <= 6:  # the wide task's reservation: ranks 1-6 (idle or fewest tasks)
                loans[r] = loans.get(r, 0) + 1
        running += list(got)
        k = running.pop(0 if seed is None else rng.randrange(len(running)))
        ranks = s.finish(k)
        if ranks[0] <= 6:
            ended_on_wide_ranks.append(k)
        s.submit(nxt, ONE)
        nxt += 1
    assert "wide" in got, "wide task starved"
    assert got["wide"] == (1, 2, 3, 4, 5, 6)
    assert all(n <= lend for n in loans.values())
    assert len(ended_on_wide_ranks) <= 12 + 6 * lend
    if seed is None:  # oldest first: every rank is lent its full budget
        assert loans == ({r: lend for r in range(1, 7)} if lend else {})
        assert rounds == 13 + 10 * lend  # held and lent tasks end amid the stream on 7, 8


def test_stream_of_narrow_exclusive_tasks_cannot_starve_a_wide_one() -> None:
    s = Scheduler([[1, 2, 3, 4]], depth=2, lend=DEFAULT_LEND)
    rng = random.Random(5)
    shapes = [EXCL, Shape(2), ONE]
    nxt = 0
    running: list[Hashable] = []
    for _ in range(8):
        s.submit(nxt, rng.choice(shapes))
        nxt += 1
    running += list(_assign(s))
    s.submit("wide", Shape(4))
    for rounds in range(1, 200):  # noqa: B007  (read after the loop: the rounds it took)
        got = _assign(s)
        if "wide" in got:
            break
        running += list(got)
        s.finish(running.pop(rng.randrange(len(running))))
        for _ in range(2):  # more arrives than ends: the queue never runs dry
            s.submit(nxt, rng.choice(shapes))
            nxt += 1
    assert "wide" in got
    # every rank: at most depth tasks held when reserved, then at most DEFAULT_LEND loans
    assert rounds <= 4 * (2 + DEFAULT_LEND) + 1


def test_cancelled_reservation_forgets_its_loans() -> None:
    s = _blocked_pair(lend=1)
    assert _assign(s) == {1: (2,)}
    s.finish(1)
    assert _assign(s) == {}  # rank 2 spent its one loan
    assert s.cancel("w")
    assert _assign(s) == {2: (2,), 3: (1,)}  # rank 2 is an ordinary rank again
    s.submit("v", Shape(2))
    s.submit(4, ONE)
    s.finish(2)
    s.finish(3)
    assert _assign(s) == {4: (2,)}  # a new reservation for v: rank 2 may be lent again
    assert s.cancel(4) is False  # already running


def test_reserved_rank_stuck_while_another_is_lent() -> None:
    s = Scheduler([[1, 2, 3]], depth=4, lend=1)
    s.submit(0, ONE)
    assert _assign(s) == {0: (1,)}
    s.submit("w", Shape(3))
    s.submit(1, ONE)
    s.submit(2, ONE)
    assert _assign(s) == {1: (2,), 2: (3,)}  # both idle reserved ranks lent
    s.mark_stuck([1])  # the reservation ends; w no longer fits
    s.submit("v", Shape(2))
    out, impossible = s.assign()
    assert impossible == ["w"] and out == []  # v reserves 2 and 3, which still run 1 and 2
    assert s.finish(1) == (2,) and s.finish(0) == (1,)
    s.submit(3, ONE)
    assert _assign(s) == {3: (2,)}  # a fresh budget for v's reservation
    s.finish(2)
    assert _assign(s) == {}  # rank 3 idle, rank 2 lent: v waits
    s.finish(3)
    assert _assign(s) == {"v": (2, 3)}
    s.unstick([1])
    s.submit(4, ONE)
    assert _assign(s) == {4: (1,)}


def test_lent_rank_gets_stuck() -> None:
    s = _blocked_pair(lend=2)
    assert _assign(s) == {1: (2,)}
    s.mark_stuck([2])  # its borrowed task never came back: w can never fit
    out, impossible = s.assign()
    assert impossible == ["w"]
    assert {a.key: a.ranks for a in out} == {2: (1,), 3: (1,)}  # rank 1 is open again
    assert s.finish(1) == (2,)  # nothing held any more: its slot went with the stuck rank
    assert s.busy_ranks == 1 and s.usable_ranks == 1


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2", None])
def test_lend_must_be_a_non_negative_integer(bad: object) -> None:
    with pytest.raises(ValueError, match="lend"):
        Scheduler([[1]], lend=bad)  # type: ignore[arg-type]


def test_lend_is_a_pool_option(capsys: pytest.CaptureFixture[str]) -> None:
    from rankpool.mpi_pool.config import PoolConfig, parse, parser
    base = ["--interchange", "tcp://127.0.0.1:5", "--block-id", "1"]
    assert parse(base).lend == DEFAULT_LEND
    cfg = parse(base + ["--lend", "0"])
    assert cfg.lend == 0 and cfg.to_argv() == base + ["--lend", "0"]
    assert parse(cfg.to_argv()) == cfg
    assert "--lend" in parser().format_help()
    with pytest.raises(SystemExit):
        parse(base + ["--lend", "-1"])
    assert "--lend: must be a non-negative integer" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--lend"):
        PoolConfig("tcp://h:1", "b", lend=-3)


def test_ranks_prefetch_little_while_exclusive_tasks_wait() -> None:
    s = Scheduler([[1, 2]], depth=8, lend=0)
    s.submit("e", Shape(2))
    s.submit("x", EXCL)
    assert _assign(s) == {"e": (1, 2)}  # x waits
    s.finish("e")
    s.submit("y", Shape(2))
    for k in range(10):
        s.submit(k, ONE)
    got = _assign(s)  # x on rank 1, y blocked (reserves 2 and 1): nothing shared may start
    assert got == {"x": (1,)}
    s.finish("x")
    assert _assign(s) == {"y": (1, 2)}
    s.finish("y")
    got = _assign(s)  # no exclusive task pending: the full depth again
    assert sorted(r for (r,) in got.values()) == [1] * 5 + [2] * 5
    s.submit("z", Shape(2))
    for k in range(10, 16):
        s.submit(k, ONE)
    got = _assign(s)  # z reserves both ranks: the 1-rank tasks wait
    assert got == {}
    for k in range(10):
        s.finish(k)
    assert _assign(s) == {"z": (1, 2)}
    s.submit("w", EXCL, priority=-1)  # pending behind everything: ranks hold two at most
    s.finish("z")
    got = _assign(s)
    assert sorted(r for (r,) in got.values()) == [1, 1, 2, 2] and "w" not in got
