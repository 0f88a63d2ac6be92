"""The interchange's view of its pools: one record per registered pool, kept in last-seen
and in last-sent order.

A pool is known by its ZeroMQ routing identity (a random name each pool picks for its
connection, never shown), and by the pool id it registers, which only one connection may
hold at a time. The table keeps two ordered
mappings: one moves a pool to the end whenever it is heard from, the other whenever it is sent
something. The pools silent the longest, and those sent nothing for longest, are thus always at
the fronts: finding the lost ones, or the ones due a heartbeat, costs a look at a front, not a
scan of every pool on every loop.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

from ..protocol.messages import Capacity, Register

#: seconds of a pool's recent throughput it may hold queued beyond its ranks
PREFETCH_WINDOW = 0.1
#: heartbeats a second the interchange aims to send its idle pools, at most: with more pools
#: than that per period, each is beaten less often (see :func:`beat_interval`)
BEATS_PER_S = 2000


def beat_interval(pools: int, period: float, threshold: float) -> float:
    """How long a pool may be sent nothing before the interchange beats it.

    The period, until the pools outnumber ``BEATS_PER_S`` per period; then longer, in step
    with their number, up to a third of the threshold (three beats before a pool could be
    thought lost). A pool answers each beat after a period of its own silence (see
    :mod:`rankpool.mpi_pool.pool`), so this sets the idle traffic both ways; the threshold,
    and thus how soon a silent pool is lost, does not change.
    """
    return max(period, min(threshold / 3, pools / BEATS_PER_S))


@dataclass(eq=False, slots=True)
class Pool:
    """One registered pool and the tasks it holds.

    ``capacity`` is in ranks; ``used`` is the sum of the widths of the tasks in flight there,
    ``in_flight`` maps each such task id to its width.

    The capacity adapts to the pool's pace: twice its ranks (at most ``ranks * prefetch``),
    plus what it finishes in ``PREFETCH_WINDOW`` seconds, up to ``ranks * prefetch``. A pool
    running long tasks is thus given little more than it can run (work stays spread over
    pools), while a pool running a flood of short tasks holds enough that its ranks never wait
    for the interchange.
    ``served`` orders pools for round-robin dispatch; ``in_room`` says whether the pool has an
    entry in the matcher's index of pools with room (see :mod:`.matching`).

    ``node_ranks`` and ``widest`` are what the pool can use: a
    :class:`~rankpool.protocol.messages.Capacity` report takes the ``stuck`` ranks out of them
    (``registered`` keeps the shape it registered).
    """

    identity: bytes
    block_id: str
    pool_id: str
    hosts: list[str]
    node_ranks: list[int]
    widest: int
    capacity: int
    rankpool: str
    python: str
    last_seen: float
    last_sent: float = 0.0
    used: int = 0
    in_flight: dict[int, int] = field(default_factory=dict)
    held: bool = False
    draining: bool = False
    gone: bool = False
    served: int = 0
    in_room: bool = False
    base: int = 0
    ceiling: int = 0
    window_start: float = 0.0
    window_done: int = 0
    devices: list[str] = field(default_factory=list)
    stuck: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)     # worker ranks that died
    registered: list[int] = field(default_factory=list)
    _ranks: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._ranks = sum(self.node_ranks)
        if not self.registered:
            self.registered = list(self.node_ranks)

    @classmethod
    def from_register(cls, identity: bytes, reg: Register, prefetch: int, now: float) -> Pool:
        """Build a record from a registration already checked by :func:`check_shape`."""
        base, ceiling = _limits(sum(reg.node_ranks), reg.widest, prefetch)
        return cls(identity=identity, block_id=reg.block_id, pool_id=reg.pool_id,
                   hosts=list(reg.hosts), node_ranks=list(reg.node_ranks), widest=reg.widest,
                   capacity=base, rankpool=reg.rankpool, python=reg.python, last_seen=now,
                   last_sent=now,
                   base=base, ceiling=ceiling, window_start=now, devices=list(reg.devices))

    def reshape(self, report: Capacity, prefetch: int) -> None:
        """Take a capacity report (checked by :func:`check_capacity`): stuck ranks no longer
        count as free, and the pool is never handed a task wider than it can still hold."""
        self.stuck = sorted(report.stuck)
        self.lost = sorted(report.lost)
        self.node_ranks = list(report.node_ranks)
        self.widest = report.widest
        self._ranks = sum(self.node_ranks)
        if self.ceiling:  # else a fixed capacity
            self.base, self.ceiling = _limits(self._ranks, self.widest, prefetch)
            self.capacity = min(max(self.capacity, self.base), self.ceiling)

    @property
    def ranks(self) -> int:
        """Worker ranks of the pool."""
        return self._ranks

    @property
    def idle(self) -> int:
        """Worker ranks not taken by a task in flight here (0 while prefetched tasks wait)."""
        return max(0, self._ranks - self.used)

    @property
    def free(self) -> int:
        """Ranks' worth of tasks the pool may still be given."""
        return self.capacity - self.used

    @property
    def available(self) -> bool:
        """Whether the pool may be given new tasks at all."""
        return not (self.held or self.draining or self.gone)

    def assign_many(self, task_ids: list[int], width: int) -> None:
        self.in_flight.update(dict.fromkeys(task_ids, width))
        self.used += width * len(task_ids)

    def finish_many(self, task_ids: list[int]) -> list[int]:
        """Account for finished tasks; return those that were in flight here."""
        widths: list[Any] = list(map(self.in_flight.pop, task_ids, repeat(None)))  # in C
        try:
            done, freed = task_ids, sum(widths)
        except TypeError:  # a None: some were not in flight here (rare)
            done = [task_id for task_id, width in zip(task_ids, widths) if width is not None]
            freed = sum(width for width in widths if width is not None)
        self.used -= freed
        if not self.ceiling:  # a fixed capacity
            return done
        self.window_done += freed
        now = time.monotonic()
        elapsed = now - self.window_start
        if elapsed >= PREFETCH_WINDOW:
            paced = self.base + int(self.window_done * PREFETCH_WINDOW / elapsed)
            self.capacity = min(self.ceiling, max(paced, self.capacity // 2))
            self.window_start, self.window_done = now, 0
        elif self.window_done > self.capacity - self.base:
            self.capacity = min(self.ceiling, self.base + self.window_done)
        return done

    def describe(self, now: float | None = None) -> dict[str, Any]:
        """The JSON-able summary the ``pools`` command returns."""
        now = time.monotonic() if now is None else now
        ranks = self.ranks
        return {"block_id": self.block_id, "pool_id": self.pool_id, "hosts": list(self.hosts),
                "ranks": ranks, "node_ranks": list(self.node_ranks), "widest": self.widest,
                "stuck_ranks": list(self.stuck), "lost_ranks": list(self.lost),
                "busy_ranks": min(self.used, ranks), "tasks": len(self.in_flight),
                "held": self.held, "draining": self.draining, "rankpool": self.rankpool,
                "python": self.python, "last_seen_s": round(max(0.0, now - self.last_seen), 3),
                "devices": {str(r): d for r, d in enumerate(self.devices) if d}}


def check_shape(reg: Register) -> str:
    """Say what is wrong with a registration's shape, or "" when it can be used."""
    if not reg.pool_id or not reg.block_id:
        return "registration without a pool id or block id"
    if not reg.node_ranks or any(n < 0 for n in reg.node_ranks):
        return f"registration with bad node_ranks {reg.node_ranks!r:.200}"
    ranks = sum(reg.node_ranks)
    if ranks < 1:
        return "pool has no worker ranks"
    if not 1 <= reg.widest <= ranks:
        return f"pool's widest task {reg.widest} is not between 1 and its {ranks} worker ranks"
    if reg.devices and len(reg.devices) != ranks + 1:
        return f"pool lists devices for {len(reg.devices)} ranks; it has {ranks + 1}"
    return ""


def check_capacity(pool: Pool, report: Capacity) -> str:
    """Say what is wrong with a pool's capacity report, or "" when it can be used."""
    total = sum(pool.registered)
    if len(report.node_ranks) != len(pool.registered) or any(
            not 0 <= n <= m for n, m in zip(report.node_ranks, pool.registered)):
        return (f"usable ranks per node {report.node_ranks!r:.200} do not fit the registered "
                f"{pool.registered}")
    gone = report.stuck + report.lost
    if len(set(gone)) != len(gone) or any(not 1 <= r <= total for r in gone):
        return (f"stuck and lost ranks {report.stuck!r:.100} {report.lost!r:.100} are not "
                f"distinct worker ranks 1..{total}")
    usable = sum(report.node_ranks)
    if usable + len(gone) != total:
        return (f"{usable} usable, {len(report.stuck)} stuck and {len(report.lost)} lost ranks "
                f"make no {total} worker ranks")
    if not 0 <= report.widest <= usable:
        return f"widest task {report.widest} is not between 0 and the {usable} usable ranks"
    return ""


def _limits(ranks: int, widest: int, prefetch: int) -> tuple[int, int]:
    """The base and the ceiling of a pool's capacity (see :class:`Pool`)."""
    base = max(ranks * min(2, prefetch), widest)
    return base, max(ranks * prefetch, base)


class PoolTable:
    """Registered pools by identity, least recently heard from first."""

    def __init__(self) -> None:
        self._pools: OrderedDict[bytes, Pool] = OrderedDict()
        self._sent: OrderedDict[bytes, Pool] = OrderedDict()
        self._ids: dict[str, Pool] = {}

    def id_taken(self, pool_id: str) -> str:
        """Why a new registration may not take ``pool_id``, or "" when it is free: a pool id
        names one connection, so a second one is refused (never handed the first's route)."""
        pool = self._ids.get(pool_id)
        if pool is None:
            return ""
        return (f"pool id {pool_id!r:.80} is already registered by another connection (pool of "
                f"block {pool.block_id!r:.40} on {','.join(pool.hosts):.80}); refused")

    def __len__(self) -> int:
        return len(self._pools)

    def __iter__(self) -> Iterator[Pool]:
        return iter(list(self._pools.values()))

    def get(self, identity: bytes) -> Pool | None:
        return self._pools.get(identity)

    def add(self, pool: Pool) -> None:
        self._pools[pool.identity] = pool
        self._sent[pool.identity] = pool
        self._ids[pool.pool_id] = pool

    def remove(self, pool: Pool) -> None:
        if self._pools.get(pool.identity) is pool:
            del self._pools[pool.identity]
            del self._sent[pool.identity]
            if self._ids.get(pool.pool_id) is pool:
                del self._ids[pool.pool_id]

    def touch(self, pool: Pool, now: float) -> None:
        """Record that the pool was heard from."""
        pool.last_seen = now
        self._pools.move_to_end(pool.identity)

    def sent(self, pool: Pool, now: float) -> None:
        """Record that the pool was sent a message."""
        pool.last_sent = now
        if self._sent.get(pool.identity) is pool:
            self._sent.move_to_end(pool.identity)

    def unsent_since(self, deadline: float, limit: int) -> list[Pool]:
        """At most ``limit`` pools last sent anything before ``deadline``, longest first."""
        due: list[Pool] = []
        for pool in self._sent.values():
            if pool.last_sent >= deadline or len(due) >= limit:
                break
            due.append(pool)
        return due

    def silent_since(self, deadline: float) -> list[Pool]:
        """Pools last heard from before ``deadline``: a walk from the front that stops early."""
        silent = []
        for pool in self._pools.values():
            if pool.last_seen >= deadline:
                break
            silent.append(pool)
        return silent

    def oldest_seen(self) -> float | None:
        """When the longest-silent pool was last heard from, or None without pools."""
        for pool in self._pools.values():
            return pool.last_seen
        return None

    def of_block(self, block_id: str) -> list[Pool]:
        """Pools of one block (a scan: for commands, which are rare)."""
        return [p for p in self._pools.values() if p.block_id == block_id]
