"""Queued tasks and the matching of tasks to pools, with ranks as the unit of capacity.

Three pieces, each O(1) or O(distinct widths) per decision and never O(pools):

* :class:`TaskQueue` keeps one FIFO per (priority, width). Only queue heads are ever looked at,
  so a task that fits no pool waits at the head of its own queue without blocking the others.
* :class:`RoomIndex` keeps, per ``widest`` value, a deque of the pools that have free capacity,
  front = least recently served. A pool enters when it gains room and is dropped lazily from
  the front when it has none left, was held, or is gone.
* :func:`match` walks priorities from high to low and, within one, takes the oldest head that
  can go somewhere; it hands each chosen pool a run of ``ceil(queued / pools)`` tasks per turn,
  but no fewer than fill ``MIN_CHUNK`` of its idle ranks, so a burst is spread over the pools
  and a lone task goes at once, without one message per task when pools outnumber tasks.

A task blocked only because every pool that could hold it is full *reserves* those pools for
the rest of the pass: later (lower priority or younger) tasks may then only use narrower
pools, so a stream of narrow tasks cannot starve a wide one.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable

from ..protocol.task_slices import Run
from .pools import Pool

#: most tasks sent to one pool in one message
MAX_BATCH = 1024
#: a pool with idle ranks is handed at least this many tasks per turn (as many as it has idle
#: ranks for, when fewer): spreading a burst thinner starts no task sooner, since each still
#: lands on an idle rank, but costs a message per task; at 10,000 pools that capped routing
#: near 30,000 tasks/s (bench/scale_sim.py)
MIN_CHUNK = 128
#: pools of one bucket looked at to find one with enough room for a multi-rank task
_PROBE = 8

#: a run of queued tasks, and the arrival number of its first task (the run's tasks have
#: consecutive numbers)
Entry = tuple[int, Run]


class TaskQueue:
    """Tasks waiting for a pool, by priority (high first), then width, then arrival; kept as
    runs of the batches they came in (:mod:`rankpool.protocol.task_slices`)."""

    def __init__(self) -> None:
        self._levels: dict[int, dict[int, deque[Entry]]] = {}
        self._order: list[int] = []  # negated priorities, ascending = priorities descending
        self._seq = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def push_many(self, runs: Iterable[Run]) -> None:
        """Queue runs of tasks, in order."""
        seq = self._seq
        for run in runs:
            spec = run.spec
            self._queue(spec.priority, spec.num_ranks).append((seq + 1, run))
            seq += len(run.ids)
        self._count += seq - self._seq
        self._seq = seq

    def push_back(self, entries: Iterable[Entry]) -> None:
        """Return entries taken from the heads (in arrival order) to the front of their queues."""
        for seq, run in sorted(entries, key=lambda e: e[0], reverse=True):
            self._queue(run.spec.priority, run.spec.num_ranks).appendleft((seq, run))
            self._count += len(run.ids)

    def _queue(self, priority: int, width: int) -> deque[Entry]:
        level = self._levels.get(priority)
        if level is None:
            level = self._levels[priority] = {}
            bisect.insort(self._order, -priority)
        dq = level.get(width)
        if dq is None:
            dq = level[width] = deque()
        return dq

    def remove(self, task_ids: set[int]) -> list[int]:
        """Take these tasks out of the queue (a cancel: rare, so a pass over it is fine);
        the ids that were queued."""
        removed: list[int] = []
        for level in self._levels.values():
            for width, dq in level.items():
                if all(task_ids.isdisjoint(run.ids) for _, run in dq):
                    continue
                kept: deque[Entry] = deque()
                for seq, run in dq:
                    drop = {k for k, task_id in enumerate(run.ids) if task_id in task_ids}
                    removed += [run.ids[k] for k in sorted(drop)]
                    kept.extend((seq + at, piece) for at, piece in run.without(drop))
                level[width] = kept
        self._count -= len(removed)
        return removed

    def priorities(self) -> list[int]:
        return [-p for p in self._order]

    def level(self, priority: int) -> dict[int, deque[Entry]]:
        return self._levels.get(priority, {})

    def took(self, n: int) -> None:
        """Account for ``n`` entries popped by the matcher from the deques it was given."""
        self._count -= n

    def prune(self) -> None:
        """Forget empty queues and priority levels."""
        for prio in list(self._levels):
            level = self._levels[prio]
            for width in [w for w, dq in level.items() if not dq]:
                del level[width]
            if not level:
                del self._levels[prio]
                self._order.remove(-prio)


class RoomIndex:
    """Pools that may be given tasks, bucketed by the widest task they hold."""

    def __init__(self) -> None:
        self._buckets: dict[int, deque[Pool]] = {}
        self._widths: list[int] = []  # sorted keys of _buckets
        self._fit: dict[int, int] = {}  # widest -> available pools (room or not)
        self._stamp = 0

    @property
    def available(self) -> int:
        """Pools that may be given tasks (not held, draining or gone), full or not."""
        return sum(self._fit.values())

    def add(self, pool: Pool) -> None:
        if pool.widest not in self._buckets:
            self._buckets[pool.widest] = deque()
            bisect.insort(self._widths, pool.widest)
        if pool.available:
            self._fit[pool.widest] = self._fit.get(pool.widest, 0) + 1
        self.offer(pool)

    def set_available(self, pool: Pool, was_available: bool) -> None:
        """Account for a pool held, released, drained or gone; call after changing its flags."""
        if was_available == pool.available:
            return
        self._fit[pool.widest] = self._fit.get(pool.widest, 0) + (1 if pool.available else -1)
        self.offer(pool)

    def reshape(self, pool: Pool, old_widest: int) -> None:
        """Account for a pool whose widest task changed (ranks stuck, or back from being stuck)."""
        if pool.widest != old_widest:
            if pool.in_room:
                self._buckets[old_widest].remove(pool)  # rare: a scan of one bucket is fine
                pool.in_room = False
            if pool.available:
                self._fit[old_widest] -= 1
            self.add(pool)
        else:
            self.offer(pool)

    def offer(self, pool: Pool) -> None:
        """Put the pool in rotation if it may take tasks now and is not there already."""
        if not pool.in_room and pool.available and pool.free > 0 and pool.widest > 0:
            pool.in_room = True
            self._buckets[pool.widest].append(pool)

    def fits(self, width: int, below: float) -> bool:
        """Whether any available pool with ``width <= widest < below`` exists."""
        i = bisect.bisect_left(self._widths, width)
        return any(self._fit.get(w, 0) for w in self._widths[i:] if w < below)

    def pick(self, width: int, below: float) -> Pool | None:
        """Take the least recently served pool with ``width <= widest < below`` and room for it.

        The pool leaves the rotation; :meth:`served` puts it back at the end.
        """
        best: deque[Pool] | None = None
        best_stamp = math.inf
        for w in self._widths[bisect.bisect_left(self._widths, width):]:
            if w >= below:
                break
            dq = self._buckets[w]
            pool = self._front(dq, width)
            if pool is not None and pool.served < best_stamp:
                best, best_stamp = dq, pool.served
        if best is None:
            return None
        pool = best.popleft()
        pool.in_room = False
        return pool

    def served(self, pool: Pool) -> None:
        """Stamp a pool that was just given tasks and put it back in rotation if it has room."""
        self._stamp += 1
        pool.served = self._stamp
        self.offer(pool)

    @staticmethod
    def _front(dq: deque[Pool], width: int) -> Pool | None:
        """The first pool of a bucket with room for ``width``, dropping stale entries on the way.

        Pools with some room but not enough are rotated to the back, a bounded number of times.
        """
        probes = 0
        while dq:
            pool = dq[0]
            if not pool.available or pool.free <= 0:
                dq.popleft()
                pool.in_room = False
                continue
            if pool.free >= width:
                return pool
            probes += 1
            if probes > _PROBE or probes > len(dq):
                return None
            dq.rotate(-1)
        return None


def match(queue: TaskQueue, room: RoomIndex) -> list[tuple[Pool, list[Entry]]]:
    """Choose pools for queued tasks; return ``(pool, entries)`` batches of at most MAX_BATCH
    tasks (a run that would pass it, or go beyond what a pool takes, is cut).

    The pools' accounting (``assign``) is updated here; the caller sends the batches and, if a
    send fails, gives the tasks back with :meth:`TaskQueue.push_back`.
    """
    queued = len(queue)
    pools = room.available
    if not queued or not pools:
        return []
    chunk = min(MAX_BATCH, math.ceil(queued / pools))
    current: dict[Pool, list[Entry]] = {}
    counts: dict[Pool, int] = {}  # tasks in each pool's current batch
    batches: list[tuple[Pool, list[Entry]]] = []
    below: float = math.inf  # pools this wide or wider are reserved for a blocked task
    taken = 0
    for prio in queue.priorities():
        level = queue.level(prio)
        skipped: set[int] = set()
        while True:
            width, limit = _oldest_head(level, skipped)
            if width is None:
                break
            if width >= below:
                skipped.add(width)
                continue
            pool = room.pick(width, below)
            if pool is None:
                if room.fits(width, below):
                    below = width
                skipped.add(width)
                continue
            batch = current.get(pool)
            if batch is None or counts[pool] >= MAX_BATCH:
                batch = current[pool] = []
                counts[pool] = 0
                batches.append((pool, batch))
            least = min(MIN_CHUNK, pool.idle // width)
            n = min(max(chunk, least), pool.free // width, MAX_BATCH - counts[pool])
            dq = level[width]
            given: list[int] = []
            while n and dq and dq[0][0] < limit:
                seq, run = dq[0]
                k = min(n, len(run.ids))
                if seq + k > limit:  # only tasks that arrived before `limit`
                    k = int(limit) - seq
                if k == len(run.ids):
                    batch.append(dq.popleft())
                else:
                    batch.append((seq, run.take(k)))
                    dq[0] = (seq + k, run)
                given += batch[-1][1].ids
                n -= k
            pool.assign_many(given, width)
            counts[pool] += len(given)
            taken += len(given)
            room.served(pool)
    queue.took(taken)
    queue.prune()
    return batches


def _oldest_head(level: dict[int, deque[Entry]], skipped: set[int]) -> tuple[int | None, float]:
    """The width whose head arrived first, and the arrival of the next-oldest other head."""
    best: int | None = None
    best_seq: float = math.inf
    limit: float = math.inf
    for width, dq in level.items():
        if not dq or width in skipped:
            continue
        seq = dq[0][0]
        if seq < best_seq:
            best, best_seq, limit = width, seq, best_seq
        elif seq < limit:
            limit = seq
    return best, limit
