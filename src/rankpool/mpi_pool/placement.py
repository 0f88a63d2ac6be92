"""Task placement for the MPI pool manager: which worker ranks run which pending task.

The manager (rank 0) calls :meth:`Scheduler.assign` from its hot loop, so every operation
is cheap: pending tasks live in one FIFO deque per ``(priority, shape)`` and only queue
heads are examined; per-rank load for 1-rank tasks is kept in a lazily invalidated heap,
so placing a 1-rank task never scans all ranks.

Two kinds of occupancy exist.  1-rank non-exclusive tasks are *shared*: a rank may hold up
to ``depth`` of them (prefetched, run one after another).  Every other task is *exclusive*:
it needs completely idle ranks and holds them until :meth:`Scheduler.finish`.  Exclusive
tasks go on one node when they fit (best fit), else span nodes; blocked tasks do not stop
later ones that fit (backfill), but the first blocked exclusive task gets a reservation
so that it cannot starve.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from itertools import accumulate

from .shapes import Assignment, Layout, Shape, pick, zero
from .shapes import layout as layout_of

log = logging.getLogger(__name__)

__all__ = ["Assignment", "Scheduler", "Shape"]

_NONE: Hashable = object()  # "no reservation" sentinel (task keys may be anything hashable)


class _Queue:
    """Pending tasks of one (priority, shape), FIFO; cancelled entries are skipped lazily."""

    __slots__ = ("qid", "priority", "shape", "shared", "layout", "items", "live")

    def __init__(self, qid: int, priority: int, shape: Shape) -> None:
        self.qid = qid
        self.priority = priority
        self.shape = shape
        self.shared = shape.width == 1 and not shape.exclusive
        self.layout = layout_of(shape)
        self.items: deque[tuple[int, Hashable]] = deque()  # (seq, key)
        self.live = 0


class Scheduler:
    """Decides which worker ranks run which pending task (see the module docstring)."""

    def __init__(self, nodes: Sequence[Sequence[int]], depth: int = 16) -> None:
        """nodes: worker ranks grouped per node (rank 0 never appears; a node may be empty).
        depth: most 1-rank tasks a rank may hold at once (>= 1)."""
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._nodes = [tuple(sorted(n)) for n in nodes]
        ranks = [r for n in self._nodes for r in n]
        if any(r < 1 for r in ranks) or len(set(ranks)) != len(ranks):
            raise ValueError("worker ranks must be >= 1 and appear once")
        size = max(ranks, default=0) + 1
        self._depth = depth
        self._nranks = len(ranks)
        self._node_of = [-1] * size
        for i, n in enumerate(self._nodes):
            for r in n:
                self._node_of[r] = i
        self._held = [0] * size  # shared tasks held per rank
        self._gen = [0] * size  # bumped on stuck/unstick: older holds no longer count
        self._excl: dict[int, Hashable] = {}  # rank -> exclusive task key
        self._stuck: set[int] = set()
        self._usable_by_node = [len(n) for n in self._nodes]
        self._reserved: set[int] = set()
        self._resv_key: Hashable = _NONE
        self._resv_busy = 0  # reserved ranks still holding something
        self._free = [set(n) for n in self._nodes]  # idle, unreserved, usable ranks per node
        self._n_free = self._nranks
        self._n_open = self._nranks  # unreserved usable non-exclusive ranks with held < depth
        self._busy = 0
        self._rheap: list[tuple[int, int]] = sorted((0, r) for r in ranks)  # (held, rank), lazy
        self._queues: dict[int, _Queue] = {}
        self._qindex: dict[tuple[int, Shape], _Queue] = {}
        self._qheap: list[tuple[int, int, int]] = []  # (-priority, head seq, qid), lazy
        self._pending: dict[Hashable, tuple[int, int]] = {}  # key -> (queue id, seq)
        self._running: dict[Hashable, tuple[tuple[int, ...], bool, tuple[int, ...]]] = {}
        self._seq = 0
        self._n_excl_pending = 0
        self._fits: dict[Shape, bool] = {}
        self._recheck = False  # some queue may have become impossible

    # ---- rank bookkeeping -------------------------------------------------------------
    def _contrib(self, r: int, sign: int) -> None:
        """Add (+1) or remove (-1) rank r's share of the derived counters and sets.

        Every state change of a rank is bracketed by ``_contrib(r, -1)`` / ``(r, +1)``."""
        if r in self._stuck:
            return
        h = self._held[r]
        ex = r in self._excl
        if h or ex:
            self._busy += sign
            if r in self._reserved:
                self._resv_busy += sign
        if r in self._reserved or ex:
            return
        if h == 0:
            self._n_free += sign
            node_free = self._free[self._node_of[r]]
            (node_free.add if sign > 0 else node_free.discard)(r)
        if h < self._depth:
            self._n_open += sign
            if sign > 0:
                self._push_rank(r)

    def _push_rank(self, r: int) -> None:
        heap = self._rheap
        heapq.heappush(heap, (self._held[r], r))
        if len(heap) > 4 * self._nranks + 64:  # too many stale entries: rebuild
            self._rheap = [(self._held[x], x) for n in self._nodes for x in n
                           if self._open(x, self._held[x])]
            heapq.heapify(self._rheap)

    def _open(self, r: int, h: int) -> bool:
        return (h < self._depth and self._held[r] == h and r not in self._stuck
                and r not in self._reserved and r not in self._excl)

    def _pop_rank(self) -> int | None:
        """The open rank holding fewest tasks (lowest number among equals), or None."""
        heap = self._rheap
        while heap:
            h, r = heapq.heappop(heap)
            if self._open(r, h):
                return r
        return None

    # ---- queues -------------------------------------------------------------------------
    def _head(self, q: _Queue) -> tuple[int, Hashable]:
        items, pending = q.items, self._pending
        while True:
            seq, key = items[0]
            ent = pending.get(key)
            if ent is not None and ent[1] == seq:
                return seq, key
            items.popleft()

    def _drop_queue(self, q: _Queue) -> None:
        del self._queues[q.qid]
        del self._qindex[(q.priority, q.shape)]

    def _take_pending(self, key: Hashable) -> None:
        qid, _ = self._pending.pop(key)
        q = self._queues[qid]
        q.live -= 1
        if not q.shared:
            self._n_excl_pending -= 1
        if q.live == 0:
            self._drop_queue(q)

    def _drain_impossible(self, out: list[Hashable]) -> None:
        self._recheck = False
        for q in list(self._queues.values()):
            if self.fits_ever(q.shape):
                continue
            keys = [k for s, k in q.items if (e := self._pending.get(k)) is not None and e[1] == s]
            for k in keys:
                self._take_pending(k)
                if k == self._resv_key:
                    self._release_reservation()
            out += keys
            log.warning("%d pending task(s) of shape %s can never be placed", len(keys), q.shape)

    # ---- placement ---------------------------------------------------------------------
    def _place(self, layout: Layout, extra: Sequence[int] = ()) -> list[int] | None:
        """Idle unreserved ranks (plus the idle ranks ``extra``) for ``layout``, or None."""
        if layout[0] > self._n_free + len(extra):
            return None
        more: dict[int, set[int]] = {}
        for r in extra:
            more.setdefault(self._node_of[r], set()).add(r)
        free = self._free
        return pick(layout, [len(s) + len(more.get(i, ())) for i, s in enumerate(free)], zero,
                     lambda i, k: sorted(free[i] | more[i] if i in more else free[i])[:k])

    def _reserve(self, key: Hashable, layout: Layout) -> None:
        """Reserve ranks for a blocked task: idle ones first, then those freeing soonest."""
        worst = self._depth + 1  # an exclusive task's end is unknown: avoid its ranks
        per_node = [sorted((worst if r in self._excl else self._held[r], r)
                           for r in n if r not in self._stuck) for n in self._nodes]
        prefix = [list(accumulate((c for c, _ in lst), initial=0)) for lst in per_node]
        ranks = pick(layout, [len(lst) for lst in per_node], lambda i, k: prefix[i][k],
                      lambda i, k: [r for _, r in per_node[i][:k]])
        if ranks is None:  # cannot happen for a shape that fits_ever
            return
        for r in ranks:
            self._contrib(r, -1)
            self._reserved.add(r)
            self._contrib(r, 1)
        self._resv_key = key
        log.debug("reserved ranks %s for blocked task %r", ranks, key)

    def _release_reservation(self) -> None:
        for r in list(self._reserved):
            self._contrib(r, -1)
            self._reserved.discard(r)
            self._contrib(r, 1)
        self._resv_key = _NONE

    def _start_exclusive(self, key: Hashable, ranks: list[int], out: list[Assignment]) -> None:
        for r in ranks:
            self._contrib(r, -1)
            self._excl[r] = key
            self._contrib(r, 1)
        t = tuple(ranks)
        self._running[key] = (t, True, tuple(self._gen[r] for r in t))
        out.append(Assignment(key, t))

    def _assign_exclusive(self, q: _Queue, key: Hashable, out: list[Assignment],
                          failed: set[Layout]) -> bool:
        """Try to start the head of an exclusive queue; False if it is blocked."""
        layout = q.layout
        assert layout is not None  # malformed shapes never fit, drained beforehand
        if key == self._resv_key:  # it may start early, partly off its reserved ranks
            ranks = self._place(layout, [r for r in self._reserved
                                         if not self._held[r] and r not in self._excl])
            if ranks is not None:
                self._release_reservation()
        else:
            ranks = None if layout in failed else self._place(layout)
            if ranks is None:
                failed.add(layout)  # free ranks only shrink during one assign()
                if self._resv_key is _NONE:
                    self._reserve(key, layout)
        if ranks is None:
            return False
        self._take_pending(key)
        self._start_exclusive(key, ranks, out)
        return True

    def _assign_shared(self, q: _Queue, out: list[Assignment], per: dict[int, int],
                       given: dict[int, dict[int, int]]) -> bool:
        """Hand 1-rank tasks of q to the least-loaded open ranks, in batches.

        A rank gets at most min(depth - held, ceil(pending / open ranks)) tasks from q per
        assign() call.  Stops before passing the next queue's head (FIFO across shapes of
        one priority).  Returns False when no open rank is left for q in this call."""
        if self._n_open == 0:
            return False
        cap = per.setdefault(q.qid, -(-q.live // self._n_open))
        got = given.setdefault(q.qid, {})
        bound = self._qheap[0][:2] if self._qheap else None
        negp = -q.priority
        items, pending, running, held = q.items, self._pending, self._running, self._held
        skipped: set[int] = set()
        more = False
        while not more:
            r = self._pop_rank()
            if r is None:
                break
            k = min(self._depth - held[r], cap - got.get(r, 0))
            if k <= 0:
                skipped.add(r)
                continue
            n, ranks, gen = 0, (r,), (self._gen[r],)
            while n < k:
                seq, key = items[0]
                ent = pending.get(key)
                if ent is None or ent[1] != seq:
                    items.popleft()
                    continue
                if bound is not None and (negp, seq) > bound:
                    more = True
                    break
                items.popleft()
                del pending[key]
                running[key] = (ranks, False, gen)
                out.append(Assignment(key, ranks))
                n += 1
                q.live -= 1
                if not q.live:
                    more = True
                    break
            if n:
                self._contrib(r, -1)
                held[r] += n
                self._contrib(r, 1)
                got[r] = got.get(r, 0) + n
            else:
                skipped.add(r)
        for r in skipped:
            self._push_rank(r)
        if not q.live:
            self._drop_queue(q)
        return more

    # ---- public interface --------------------------------------------------------------
    def node_of(self, rank: int) -> int:
        """Index of the node holding ``rank``; ValueError for a rank not in the pool."""
        if not 0 <= rank < len(self._node_of) or self._node_of[rank] < 0:
            raise ValueError(f"rank {rank} is not a worker rank of this pool")
        return self._node_of[rank]

    def fits_ever(self, shape: Shape) -> bool:
        """Could this shape ever be placed on the usable (non-stuck) ranks."""
        ok = self._fits.get(shape)
        if ok is None:
            layout = layout_of(shape)
            ok = layout is not None and pick(layout, self._usable_by_node, zero,
                                              lambda i, k: [0] * k) is not None
            self._fits[shape] = ok
        return ok

    def submit(self, key: Hashable, shape: Shape, priority: int = 0) -> None:
        """Queue a task; raises ValueError if ``key`` is already pending or running."""
        if key in self._pending or key in self._running:
            raise ValueError(f"task key {key!r} is already live")
        q = self._qindex.get((priority, shape))
        seq = self._seq
        self._seq += 1
        if q is None:
            q = _Queue(seq, priority, shape)  # seq doubles as a unique queue id
            self._queues[q.qid] = self._qindex[(priority, shape)] = q
            heapq.heappush(self._qheap, (-priority, seq, q.qid))
        q.items.append((seq, key))
        q.live += 1
        self._pending[key] = (q.qid, seq)  # ints only: nothing for the GC to walk
        if not q.shared:
            self._n_excl_pending += 1
        if not self.fits_ever(shape):
            self._recheck = True

    def cancel(self, key: Hashable) -> bool:
        """Remove a still-pending task; True if it was pending."""
        if key not in self._pending:
            return False
        self._take_pending(key)  # its deque entry is skipped lazily
        if key == self._resv_key:
            self._release_reservation()
        return True

    def assign(self) -> tuple[list[Assignment], list[Hashable]]:
        """Start whatever can start now, in priority order with backfill and reservation.

        Returns (assignments, impossible_keys); impossible tasks are removed from the queue
        and should be failed by the caller."""
        out: list[Assignment] = []
        impossible: list[Hashable] = []
        if self._recheck:
            self._drain_impossible(impossible)
        if self._resv_key is not _NONE and self._resv_busy == 0:  # reservation satisfied
            key, ranks = self._resv_key, sorted(self._reserved)
            self._release_reservation()
            self._take_pending(key)
            self._start_exclusive(key, ranks, out)
        heap, aside = self._qheap, []
        failed: set[Layout] = set()
        per: dict[int, int] = {}
        given: dict[int, dict[int, int]] = {}
        while heap:
            if self._n_open == 0 and (self._resv_key is not _NONE or not self._n_excl_pending):
                break  # nothing can start and no reservation is left to make
            negp, seq, qid = heapq.heappop(heap)
            q = self._queues.get(qid)
            if q is None:
                continue
            head, key = self._head(q)
            if head != seq:
                heapq.heappush(heap, (negp, head, qid))
                continue
            if q.shared:
                more = self._assign_shared(q, out, per, given)
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

    def finish(self, key: Hashable) -> tuple[int, ...]:
        """The task ended; free its ranks (or slot) and return the ranks it had."""
        ranks, exclusive, gens = self._running.pop(key)
        for r, g in zip(ranks, gens, strict=True):
            if self._gen[r] != g:  # the rank was marked stuck since: nothing held any more
                continue
            self._contrib(r, -1)
            if exclusive:
                del self._excl[r]
            else:
                self._held[r] -= 1
            self._contrib(r, 1)
        return ranks

    def mark_stuck(self, ranks: Sequence[int]) -> None:
        """These ranks never came back from a task: never use them again.

        Their held slots are dropped; tasks on them stay running until finish(key)."""
        for r in ranks:
            self.node_of(r)  # validates
            if r in self._stuck:
                continue
            if r in self._reserved:
                self._release_reservation()  # recomputed on the next assign()
            self._contrib(r, -1)
            self._held[r] = 0
            self._excl.pop(r, None)
            self._gen[r] += 1
            self._stuck.add(r)
            self._usable_by_node[self._node_of[r]] -= 1
            log.info("rank %d marked stuck", r)
        self._fits.clear()
        self._recheck = True

    def unstick(self, ranks: Sequence[int]) -> None:
        """They came back after all: usable again, idle."""
        for r in ranks:
            self.node_of(r)  # validates
            if r not in self._stuck:
                continue
            self._stuck.discard(r)
            self._gen[r] += 1
            self._usable_by_node[self._node_of[r]] += 1
            self._contrib(r, 1)
            log.info("rank %d usable again", r)
        self._fits.clear()

    @property
    def pending(self) -> int:
        """Number of tasks waiting."""
        return len(self._pending)

    @property
    def running(self) -> int:
        """Tasks assigned and not finished."""
        return len(self._running)

    @property
    def busy_ranks(self) -> int:
        """Usable ranks holding at least one task."""
        return self._busy

    @property
    def usable_ranks(self) -> int:
        """Ranks not stuck."""
        return self._nranks - len(self._stuck)

    @property
    def free_ranks(self) -> int:
        """Usable ranks holding nothing."""
        return self.usable_ranks - self._busy

    def ranks_of(self, key: Hashable) -> tuple[int, ...]:
        """Ranks of an assigned (running) task; KeyError if it is not running."""
        return self._running[key][0]
