"""Task placement for the MPI pool manager: which worker ranks run which pending task.

The manager (rank 0) calls :meth:`Scheduler.assign` from its hot loop, so every operation
is cheap: pending tasks wait in :mod:`.queues` (only queue heads are examined), per-rank
state lives in :mod:`.inventory`, and 1-rank tasks are batched onto the least-loaded ranks by
:mod:`.shared` (placing one never scans all ranks).

Two kinds of occupancy exist.  1-rank non-exclusive tasks are *shared*: a rank may hold up
to ``depth`` of them (prefetched, run one after another; at most two while exclusive tasks
are pending, since a reservation waits for everything queued on its ranks; none more while
the manager holds the rank back, see :meth:`Scheduler.hold_back`).  Every other
task is *exclusive*: it needs completely idle ranks and holds them until
:meth:`Scheduler.finish`.  Exclusive tasks go on one node when they fit (best fit), else
span nodes; blocked tasks do not stop later ones that fit (backfill), but the first blocked
exclusive task gets a reservation so that it cannot starve: ranks kept for it, idle ones
first, then those holding least.

Run times are unknown, so a strict reservation holds every rank that frees up until the
wide task fits, and on a small pool those ranks idle for long.  Instead an idle reserved
rank is *lent*: a later task that fits may run on it (an exclusive task after any free
ranks; a shared task only where no open rank is idle, one at a time), but each reserved rank
at most ``lend`` times per reservation; then it stays idle for the reserved task.  So the
wide task waits at most ``lend`` extra task durations on any of its ranks, and starts as
soon as all of them are idle.  ``lend=0`` is a strict reservation.  A reservation ends
(and its loans are forgotten) when its task starts, is cancelled or can no longer fit, or
when one of its ranks is marked stuck; the next ``assign`` makes a new one.

GPU tasks (``Shape.gpus``) are exclusive and take only ranks that own an accelerator; as a
rank runs one task at a time, no two tasks use a device at once unless the pool lets several
ranks share it (``ranks_per_accelerator``). Other tasks prefer ranks that own no device.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Hashable, Iterable, Sequence

from ...errors import ResourceSpecError
from ...wording import counted
from .inventory import RankInventory
from .queues import PendingTasks, ShapeQueue
from .shapes import Assignment, Layout, Shape
from .shapes import layout as layout_of
from .shared import assign_shared

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_DEPTH", "DEFAULT_LEND", "Assignment", "Scheduler", "Shape", "check_lend"]

#: Times each reserved rank may be lent per reservation unless configured otherwise: a wide
#: task then waits at most two extra task durations on any of its ranks.
DEFAULT_LEND = 2
#: Most 1-rank tasks a worker rank holds (runs one, prefetches the rest) unless configured
#: otherwise: a rank is refilled while it still has work, so no-op floods keep it busy. The
#: pool's rank 0 queues fewer while its tasks run longer (see :mod:`..prefetch`).
DEFAULT_DEPTH = 256


def check_lend(lend: object, name: str) -> None:
    """ValueError naming ``name`` unless ``lend`` is a lending budget: an integer >= 0."""
    if isinstance(lend, bool) or not isinstance(lend, int) or lend < 0:
        raise ValueError(f"{name}: must be a non-negative integer (0: strict reservation), "
                         f"got {lend!r}")


_NONE: Hashable = object()  # "no reservation" sentinel (task keys may be anything hashable)


class Scheduler:
    """Decides which worker ranks run which pending task (see the module docstring)."""

    def __init__(self, nodes: Sequence[Sequence[int]], depth: int = DEFAULT_DEPTH,
                 devices: Iterable[int] = (), devices_per_rank: int = 1,
                 lend: int = DEFAULT_LEND) -> None:
        """nodes: worker ranks grouped per node (rank 0 never appears; a node may be empty).
        depth: most 1-rank tasks a rank may hold at once (>= 1).
        devices: the worker ranks that own accelerators, ``devices_per_rank`` each.
        lend: times each reserved rank may be lent to other tasks per reservation (>= 0;
        0: a reservation is strict)."""
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        check_lend(lend, "lend")
        self._inv = RankInventory(nodes, depth, devices, lend)
        self._devices_per_rank = devices_per_rank
        self._q = PendingTasks()
        self._resv_key: Hashable = _NONE
        self._running: dict[Hashable, tuple[tuple[int, ...], bool, tuple[int, ...]]] = {}
        self._fits: dict[Shape, bool] = {}
        self._recheck = False  # some queue may have become impossible

    # ---- queues -------------------------------------------------------------------------
    def _drain_impossible(self, out: list[Hashable]) -> None:
        self._recheck = False
        for q in list(self._q.queues.values()):
            if self.fits_ever(q.shape):
                continue
            keys = self._q.live_keys(q)
            for k in keys:
                self._q.take(k)
                if k == self._resv_key:
                    self._release_reservation()
            out += keys
            log.warning("%d pending task(s) of shape %s can never be placed", len(keys), q.shape)

    # ---- reservation ---------------------------------------------------------------------
    def _reserve(self, key: Hashable, layout: Layout, gpu: bool) -> None:
        """Reserve ranks for a blocked task: idle ones first, then those freeing soonest."""
        ranks = self._inv.reservation(layout, gpu)
        if ranks is None:  # cannot happen for a shape that fits_ever
            return
        self._inv.set_reserved(ranks, True)
        self._resv_key = key
        log.debug("reserved ranks %s for blocked task %r", ranks, key)

    def _release_reservation(self) -> None:
        self._inv.set_reserved(list(self._inv.reserved), False)
        self._resv_key = _NONE

    # ---- placement ---------------------------------------------------------------------
    def _start_exclusive(self, key: Hashable, ranks: list[int], out: list[Assignment]) -> None:
        self._inv.take_exclusive(key, ranks)
        t = tuple(ranks)
        self._running[key] = (t, True, tuple(self._inv.gen[r] for r in t))
        out.append(Assignment(key, t))

    def _assign_exclusive(self, q: ShapeQueue, key: Hashable, out: list[Assignment],
                          failed: set[tuple[Layout, bool]]) -> bool:
        """Try to start the head of an exclusive queue; False if it is blocked."""
        layout, inv = q.layout, self._inv
        assert layout is not None  # malformed shapes never fit, drained beforehand
        if key == self._resv_key:  # it may start early, partly off its reserved ranks
            ranks = inv.place(layout, q.gpu, [r for r in inv.reserved
                                              if not inv.held[r] and r not in inv.excl])
            if ranks is not None:
                self._release_reservation()
        elif (layout, q.gpu) in failed:
            ranks = None
        else:
            ranks = inv.place(layout, q.gpu)
            if ranks is None and inv.spare:  # borrow idle reserved ranks
                ranks = inv.place(layout, q.gpu, inv.lendable())
            if ranks is None:
                failed.add((layout, q.gpu))  # idle ranks only get fewer during one assign()
                if self._resv_key is _NONE:
                    self._reserve(key, layout, q.gpu)
        if ranks is None:
            return False
        self._q.take(key)
        self._start_exclusive(key, ranks, out)
        return True

    # ---- public interface --------------------------------------------------------------
    def node_of(self, rank: int) -> int:
        """Index of the node holding ``rank``; ValueError for a rank not in the pool."""
        node_of = self._inv.node_of
        if not 0 <= rank < len(node_of) or node_of[rank] < 0:
            raise ValueError(f"rank {rank} is not a worker rank of this pool")
        return node_of[rank]

    def fits_ever(self, shape: Shape) -> bool:
        """Could this shape ever be placed on the usable (non-stuck) ranks."""
        ok = self._fits.get(shape)
        if ok is None:
            layout = layout_of(shape)
            ok = layout is not None and shape.gpus <= self._devices_per_rank \
                and self._inv.fits(layout, shape.gpus > 0)
            self._fits[shape] = ok
        return ok

    def never_fits(self, task_id: int, shape: Shape) -> ResourceSpecError:
        """The error of a task of a shape that :meth:`fits_ever` refuses, naming what it
        needs and what this pool's usable ranks are."""
        gpu = "GPU " if shape.gpus else ""
        usable = self.usable_device_ranks if shape.gpus else self.usable_ranks
        parts = [f"{shape.ranks_per_node} per node" if shape.ranks_per_node else "",
                 f"on {shape.num_nodes} nodes" if shape.num_nodes else ""]
        layout = ", ".join(p for p in parts if p)
        return ResourceSpecError(
            "gpus_per_rank" if shape.gpus else "num_ranks",
            f"task {task_id} needs {counted(shape.width, gpu + 'rank')}"
            f"{f' ({layout})' if layout else ''}; this pool has "
            f"{counted(usable, 'usable worker rank')}{' that own an accelerator' if gpu else ''} "
            f"on nodes of {[len(n) for n in self._inv.nodes]} worker ranks")

    def submit(self, key: Hashable, shape: Shape, priority: int = 0) -> None:
        """Queue a task; raises ValueError if ``key`` is already pending or running."""
        self.submit_many((key,), shape, priority)

    def submit_many(self, keys: Sequence[Hashable], shape: Shape, priority: int = 0) -> None:
        """Queue tasks of one shape and priority, in order; raises ValueError, and queues
        none of them, if a key is already pending or running, or repeats."""
        if not self._q.pending.keys().isdisjoint(keys) or \
                not self._running.keys().isdisjoint(keys):
            live = [k for k in keys if k in self._q.pending or k in self._running]
            raise ValueError(f"task key {live[0]!r} is already live")
        if shape.gpus and not shape.exclusive:
            raise ValueError("a GPU shape must be exclusive")
        self._q.add(keys, shape, priority)
        if not self.fits_ever(shape):
            self._recheck = True

    def cancel(self, key: Hashable) -> bool:
        """Remove a still-pending task; True if it was pending."""
        if key not in self._q.pending:
            return False
        self._q.take(key)  # its deque entry is skipped lazily
        if key == self._resv_key:
            self._release_reservation()
        return True

    def assign(self) -> tuple[list[Assignment], list[Hashable]]:
        """Start whatever can start now, in priority order with backfill, reservation and
        lending.

        Returns (assignments, impossible_keys); impossible tasks are removed from the queue
        and should be failed by the caller."""
        out: list[Assignment] = []
        impossible: list[Hashable] = []
        inv, pend = self._inv, self._q
        if self._recheck:
            self._drain_impossible(impossible)
        if self._resv_key is not _NONE and inv.resv_busy == 0:  # reservation satisfied
            key, ranks = self._resv_key, sorted(inv.reserved)
            self._release_reservation()
            pend.take(key)
            self._start_exclusive(key, ranks, out)
        heap, aside = pend.heap, []
        failed: set[tuple[Layout, bool]] = set()
        per: dict[int, int] = {}
        given: dict[int, dict[int, int]] = {}
        while heap:
            if inv.n_open == 0 and not inv.spare \
                    and (self._resv_key is not _NONE or not pend.n_exclusive):
                break  # nothing can start and no reservation is left to make
            negp, seq, qid = heapq.heappop(heap)
            q = pend.queues.get(qid)
            if q is None:
                continue
            head, key = pend.head(q)
            if head != seq:
                heapq.heappush(heap, (negp, head, qid))
                continue
            if q.shared:
                more = assign_shared(inv, pend, self._running, q, out, per, given)
            else:
                more = self._assign_exclusive(q, key, out, failed)
            if q.live:
                entry = (negp, q.items[0][0], qid)
                if more:
                    heapq.heappush(heap, entry)
                else:
                    aside.append(entry)
        for entry in aside:
            heapq.heappush(heap, entry)
        return out, impossible

    @property
    def depth(self) -> int:
        """Most 1-rank tasks a rank holds."""
        return self._inv.depth

    def set_depth(self, depth: int) -> None:
        """Hold at most ``depth`` (>= 1) 1-rank tasks per rank from now on (a rank holding
        more keeps them)."""
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._inv.set_depth(depth)

    def finish(self, key: Hashable) -> tuple[int, ...]:
        """The task ended; free its ranks (or slot) and return the ranks it had."""
        ranks, exclusive, gens = self._running.pop(key)
        for r, g in zip(ranks, gens, strict=True):
            if self._inv.gen[r] == g:  # else the rank was marked stuck since: nothing held
                self._inv.release(r, exclusive)
        return ranks

    def finish_many(self, keys: Iterable[Hashable]) -> None:
        """These tasks ended: :meth:`finish` for each, with the shared tasks that one rank
        held released together (one update of that rank's state instead of one per task)."""
        running, gen = self._running, self._inv.gen
        if not isinstance(keys, list):
            keys = list(keys)
        held = list(map(running.get, keys))
        # the common case, a rank's report in a flood: shared tasks it was handed together
        # share one record (see assign_shared), so a pass in C checks them all
        if held and held[0] is not None and held.count(held[0]) == len(keys):
            ranks, exclusive, gens = held[0]
            if not exclusive:
                list(map(running.pop, keys))
                if gen[ranks[0]] == gens[0]:
                    self._inv.release(ranks[0], False, len(keys))
                return
        shared: dict[int, int] = {}
        for key in keys:
            ranks, exclusive, gens = running[key]
            if exclusive:
                self.finish(key)
                continue
            del running[key]
            if gen[ranks[0]] == gens[0]:
                shared[ranks[0]] = shared.get(ranks[0], 0) + 1
        for r, count in shared.items():
            self._inv.release(r, False, count)

    def mark_stuck(self, ranks: Sequence[int]) -> None:
        """These ranks never came back from a task: never use them again.

        Their held slots are dropped; tasks on them stay running until finish(key)."""
        for r in ranks:
            self.node_of(r)  # validates
            if r in self._inv.stuck:
                continue
            if r in self._inv.reserved:
                self._release_reservation()  # recomputed on the next assign()
            self._inv.set_stuck(r, True)
            log.info("rank %d marked stuck", r)
        self._fits.clear()
        self._recheck = True

    def unstick(self, ranks: Sequence[int]) -> None:
        """They came back after all: usable again, idle."""
        for r in ranks:
            self.node_of(r)  # validates
            if r not in self._inv.stuck:
                continue
            self._inv.set_stuck(r, False)
            log.info("rank %d usable again", r)
        self._fits.clear()

    def hold_back(self, r: int, on: bool = True) -> None:
        """Queue no more 1-rank tasks on rank r while it holds any (its current task has run
        long, so what waits behind it would wait with it), or again (``on=False``)."""
        self.node_of(r)  # validates
        self._inv.hold_back(r, on)

    def held_back(self, r: int) -> bool:
        return r in self._inv.held_back

    @property
    def held_back_ranks(self) -> set[int]:
        """The ranks held back now (a live view: do not change it)."""
        return self._inv.held_back

    def holding(self, r: int) -> int:
        """1-rank tasks rank r holds (running and queued)."""
        return self._inv.held[r]

    @property
    def pending(self) -> int:
        """Number of tasks waiting."""
        return len(self._q.pending)

    @property
    def running(self) -> int:
        """Tasks assigned and not finished."""
        return len(self._running)

    @property
    def busy_ranks(self) -> int:
        """Usable ranks holding at least one task."""
        return self._inv.busy

    @property
    def usable_ranks(self) -> int:
        """Ranks not stuck."""
        return self._inv.nranks - len(self._inv.stuck)

    @property
    def usable_device_ranks(self) -> int:
        """Ranks that own an accelerator and are not stuck."""
        return sum(self._inv.usable_dev_by_node)

    @property
    def free_ranks(self) -> int:
        """Usable ranks holding nothing."""
        return self.usable_ranks - self._inv.busy

    def ranks_of(self, key: Hashable) -> tuple[int, ...]:
        """Ranks of an assigned (running) task; KeyError if it is not running."""
        return self._running[key][0]
