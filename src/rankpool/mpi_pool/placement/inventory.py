"""The worker ranks of a pool and what each one holds: the scheduler's bookkeeping, no policy.

A rank is *stuck* (never used again), *reserved* (kept for a blocked wide task), running one
*exclusive* task, or holding up to ``depth`` *shared* 1-rank tasks; a rank holding shared
tasks may be *held back* (its current task has run long: nothing more is queued behind it).
Derived counters and per-node sets of idle ranks are kept up to date incrementally: every
state change of a rank is bracketed by ``contrib(r, -1)`` / ``contrib(r, +1)``, so placing a
task never scans the pool.

An idle reserved rank may be *lent* to another task at most ``lend`` times per reservation
(``lent`` counts them; any task taking a reserved rank is a loan, since the reserved task
itself releases its reservation before it takes its ranks); ``spare`` holds the idle reserved
ranks that may still be lent.

Some ranks own an accelerator (see :mod:`rankpool.task.node_resources`). GPU tasks may only take
those; every other task prefers ranks that own none, so devices stay free for GPU tasks.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable, Sequence
from itertools import accumulate

from .shapes import Layout, pick, zero


class RankInventory:
    """Per-rank state of the worker ranks ``nodes`` (grouped per node); ``devices``: the
    ranks that own an accelerator."""

    def __init__(self, nodes: Sequence[Sequence[int]], depth: int,
                 devices: Iterable[int] = (), lend: int = 0) -> None:
        self.nodes = [tuple(sorted(n)) for n in nodes]
        ranks = [r for n in self.nodes for r in n]
        if any(r < 1 for r in ranks) or len(set(ranks)) != len(ranks):
            raise ValueError("worker ranks must be >= 1 and appear once")
        self.dev = frozenset(devices)
        if not self.dev <= set(ranks):
            raise ValueError(f"device ranks {sorted(self.dev - set(ranks))} are not worker ranks")
        size = max(ranks, default=0) + 1
        self.depth = depth
        self.lend = lend
        self.nranks = len(ranks)
        self.node_of = [-1] * size
        for i, n in enumerate(self.nodes):
            for r in n:
                self.node_of[r] = i
        self.held = [0] * size  # shared tasks held per rank
        self.gen = [0] * size  # bumped on stuck/unstick: older holds no longer count
        self.excl: dict[int, Hashable] = {}  # rank -> exclusive task key
        self.stuck: set[int] = set()
        self.held_back: set[int] = set()  # take no more shared tasks while holding any
        self.usable_by_node = [len(n) for n in self.nodes]
        self.usable_dev_by_node = [sum(r in self.dev for r in n) for n in self.nodes]
        self.reserved: set[int] = set()
        self.resv_busy = 0  # reserved ranks still holding something
        self.lent: dict[int, int] = {}  # reserved rank -> times lent during this reservation
        self.spare: set[int] = set()  # idle usable reserved ranks lent fewer than lend times
        self.free = [set(n) for n in self.nodes]  # idle, unreserved, usable ranks per node
        self.free_dev = [set(n) & self.dev for n in self.nodes]  # those owning a device
        self.n_free = self.nranks
        self.n_open = self.nranks  # unreserved usable non-exclusive ranks with held < depth
        self.busy = 0
        self.rheap: list[tuple[int, bool, int]] = sorted(  # (held, owns a device, rank), lazy
            (0, r in self.dev, r) for r in ranks)

    # ---- state changes ----------------------------------------------------------------
    def contrib(self, r: int, sign: int) -> None:
        """Add (+1) or remove (-1) rank r's share of the derived counters and sets."""
        if r in self.stuck:
            return
        h = self.held[r]
        ex = r in self.excl
        if h or ex:
            self.busy += sign
            if r in self.reserved:
                self.resv_busy += sign
        if r in self.reserved:
            if not (h or ex) and self.lent.get(r, 0) < self.lend:
                (self.spare.add if sign > 0 else self.spare.discard)(r)
            return
        if ex:
            return
        if h == 0:
            self.n_free += sign
            i = self.node_of[r]
            if sign > 0:
                self.free[i].add(r)
                if r in self.dev:
                    self.free_dev[i].add(r)
            else:
                self.free[i].discard(r)
                self.free_dev[i].discard(r)
        if h < self.depth and not (h and r in self.held_back):
            self.n_open += sign
            if sign > 0:
                self.push_rank(r)

    def push_rank(self, r: int) -> None:
        heap = self.rheap
        heapq.heappush(heap, (self.held[r], r in self.dev, r))
        if len(heap) > 4 * self.nranks + 64:  # too many stale entries: rebuild
            self.rheap = [(self.held[x], x in self.dev, x) for n in self.nodes for x in n
                          if self.is_open(x, self.held[x])]
            heapq.heapify(self.rheap)

    def is_open(self, r: int, h: int) -> bool:
        return (h < self.depth and self.held[r] == h and r not in self.stuck
                and r not in self.reserved and r not in self.excl
                and not (h and r in self.held_back))

    def pop_rank(self) -> int | None:
        """The open rank holding fewest tasks (device-less, then lowest number, among equals)."""
        heap = self.rheap
        while heap:
            h, _, r = heapq.heappop(heap)
            if self.is_open(r, h):
                return r
        return None

    def set_reserved(self, ranks: Iterable[int], on: bool) -> None:
        """Reserve ranks, or end their reservation (which forgets their loans)."""
        for r in ranks:
            self.contrib(r, -1)
            if on:
                self.reserved.add(r)
            else:
                self.reserved.discard(r)
                self.lent.pop(r, None)
            self.contrib(r, 1)

    def _count_loan(self, r: int) -> None:
        # called once r is busy (so not in spare): the spare set stays consistent
        if r in self.reserved:
            self.lent[r] = self.lent.get(r, 0) + 1

    def take_exclusive(self, key: Hashable, ranks: Iterable[int]) -> None:
        for r in ranks:
            self.contrib(r, -1)
            self.excl[r] = key
            self.contrib(r, 1)
            self._count_loan(r)

    def set_depth(self, depth: int) -> None:
        """Change the most shared tasks a rank holds: every rank's share of the counters is
        taken out under the old depth and put back under the new one. Tasks a rank holds
        beyond a lower depth stay; it takes none more until it is below it."""
        if depth == self.depth:
            return
        ranks = [r for n in self.nodes for r in n]
        for r in ranks:
            self.contrib(r, -1)
        self.depth = depth
        for r in ranks:
            self.contrib(r, 1)

    def take_shared(self, r: int, n: int) -> None:
        """Rank r takes n more shared tasks (one, if it is a lent reserved rank)."""
        self.contrib(r, -1)
        self.held[r] += n
        self.contrib(r, 1)
        self._count_loan(r)

    def lendable(self) -> list[int]:
        """The spare ranks in the order they are lent: device-less first, then by number."""
        dev = self.dev
        return sorted(self.spare, key=lambda r: (r in dev, r))

    def release(self, r: int, exclusive: bool, count: int = 1) -> None:
        """``count`` tasks held by rank r ended (an exclusive task is one)."""
        h = self.held[r]
        if h > count and not exclusive and r not in self.stuck and r not in self.reserved \
                and r not in self.excl and r not in self.held_back:
            # a busy rank stays busy and not free: what contrib(-1), held -= count,
            # contrib(+1) amount to, without their set look-ups (the hot path of a flood of
            # small tasks)
            self.held[r] = h - count
            if h >= self.depth > h - count:
                self.n_open += 1
            self.push_rank(r)
            return
        self.contrib(r, -1)
        if exclusive:
            del self.excl[r]
        else:
            self.held[r] -= count
            if not self.held[r]:
                self.held_back.discard(r)
        self.contrib(r, 1)

    def hold_back(self, r: int, on: bool) -> None:
        """Queue no more shared tasks on rank r (``on``; only while it holds some: once they
        have ended it is between tasks and the hold lapses), or again."""
        if on == (r in self.held_back) or (on and not self.held[r]):
            return
        self.contrib(r, -1)
        (self.held_back.add if on else self.held_back.discard)(r)
        self.contrib(r, 1)

    def set_stuck(self, r: int, on: bool) -> None:
        """Mark rank r stuck (its holds are dropped) or usable again (idle)."""
        if on:
            self.contrib(r, -1)
            self.held[r] = 0
            self.excl.pop(r, None)
            self.held_back.discard(r)
        self.gen[r] += 1
        (self.stuck.add if on else self.stuck.discard)(r)
        step = -1 if on else 1
        self.usable_by_node[self.node_of[r]] += step
        if r in self.dev:
            self.usable_dev_by_node[self.node_of[r]] += step
        if not on:
            self.contrib(r, 1)

    # ---- choosing ranks ---------------------------------------------------------------
    def place(self, layout: Layout, gpu: bool, extra: Sequence[int] = ()) -> list[int] | None:
        """Idle unreserved ranks, and where they do not suffice the idle ranks ``extra``, for
        ``layout``; or None.

        Nodes where fewest of ``extra`` are needed come first (they are reserved ranks: each
        one taken delays a reservation). A GPU task takes device-owning ranks only; any other
        task takes device-less ranks first and prefers the nodes where it needs fewest devices."""
        if layout[0] > self.n_free + len(extra):
            return None
        dev = self.dev
        more: dict[int, list[int]] = {}
        for r in extra:
            if not gpu or r in dev:
                more.setdefault(self.node_of[r], []).append(r)
        free = self.free_dev if gpu else self.free
        plain_first = not gpu and bool(dev)

        def order(r: int) -> tuple[bool, int]:
            return (plain_first and r in dev, r)

        def take(i: int, k: int) -> list[int]:
            own = sorted(free[i], key=order)[:k]
            return own + sorted(more.get(i, ()), key=order)[:k - len(own)]

        def borrowed(i: int, k: int) -> int:
            return max(0, k - len(free[i]))

        counts = [len(s) + len(more.get(i, ())) for i, s in enumerate(free)]
        if not plain_first:
            return pick(layout, counts, borrowed, take)
        free_dev, weight = self.free_dev, self.nranks + 1
        more_plain = {i: sum(r not in dev for r in rs) for i, rs in more.items()}

        def cost(i: int, k: int) -> int:  # ranks borrowed first, then devices taken
            b = borrowed(i, k)
            own_plain = len(free[i]) - len(free_dev[i])
            devs = len(free_dev[i]) + max(0, b - more_plain.get(i, 0)) if b \
                else max(0, k - own_plain)
            return b * weight + devs

        return pick(layout, counts, cost, take)

    def reservation(self, layout: Layout, gpu: bool) -> list[int] | None:
        """Ranks to reserve for a blocked task: idle ones first, then those freeing soonest."""
        worst = self.depth + 1  # an exclusive task's end is unknown: avoid its ranks
        dev = self.dev
        per_node = [sorted((worst if r in self.excl else self.held[r], r in dev, r) for r in n
                           if r not in self.stuck and (not gpu or r in dev))
                    for n in self.nodes]
        prefix = [list(accumulate((c for c, _, _ in lst), initial=0)) for lst in per_node]
        return pick(layout, [len(lst) for lst in per_node], lambda i, k: prefix[i][k],
                    lambda i, k: [r for _, _, r in per_node[i][:k]])

    def fits(self, layout: Layout, gpu: bool) -> bool:
        """Could ``layout`` ever be placed on the usable (non-stuck) ranks."""
        counts = self.usable_dev_by_node if gpu else self.usable_by_node
        return pick(layout, counts, zero, lambda i, k: [0] * k) is not None
