"""Pending tasks of the pool manager: one FIFO per ``(priority, shape)``, heads in a heap.

Only queue heads are ever examined, so a task that cannot start waits at the head of its own
queue without blocking others. Cancelled tasks are skipped lazily: an entry counts only while
``pending`` still maps its key to the same sequence number.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Hashable, Sequence
from itertools import repeat

from .shapes import Shape
from .shapes import layout as layout_of


class ShapeQueue:
    """Pending tasks of one (priority, shape), FIFO."""

    __slots__ = ("qid", "priority", "shape", "shared", "gpu", "layout", "items", "live")

    def __init__(self, qid: int, priority: int, shape: Shape) -> None:
        self.qid = qid
        self.priority = priority
        self.shape = shape
        self.shared = shape.width == 1 and not shape.exclusive
        self.gpu = shape.gpus > 0
        self.layout = layout_of(shape)
        self.items: deque[tuple[int, Hashable]] = deque()  # (seq, key)
        self.live = 0


class PendingTasks:
    """Every pending task, by queue; ``heap`` orders queues by (-priority, head sequence)."""

    def __init__(self) -> None:
        self.queues: dict[int, ShapeQueue] = {}
        self.index: dict[tuple[int, Shape], ShapeQueue] = {}
        self.heap: list[tuple[int, int, int]] = []  # (-priority, head seq, qid), lazy
        self.pending: dict[Hashable, tuple[int, int]] = {}  # key -> (queue id, seq)
        self.seq = 0
        self.n_exclusive = 0

    def add(self, keys: Sequence[Hashable], shape: Shape, priority: int) -> None:
        """Queue ``keys``, in order, as tasks of one shape and priority (a batch's tasks are
        queued at once: one queue lookup, the rest in bulk). ValueError, and nothing queued,
        when a key repeats."""
        if not keys:
            return
        q = self.index.get((priority, shape))
        seq, n = self.seq, len(keys)
        seqs = range(seq, seq + n)
        before = len(self.pending)
        qid = seq if q is None else q.qid  # a new queue's id is its first task's seq
        self.pending.update(zip(keys, zip(repeat(qid), seqs)))  # ints only: nothing for the
        # GC to walk
        if len(self.pending) != before + n:
            for key in keys:
                self.pending.pop(key, None)
            raise ValueError(f"a task key repeats among {n} queued at once")
        self.seq += n
        if q is None:
            q = ShapeQueue(qid, priority, shape)
            self.queues[qid] = self.index[(priority, shape)] = q
            heapq.heappush(self.heap, (-priority, seq, qid))
        q.items.extend(zip(seqs, keys))
        q.live += n
        if not q.shared:
            self.n_exclusive += n

    def head(self, q: ShapeQueue) -> tuple[int, Hashable]:
        """The first live entry of q (stale entries in front are dropped)."""
        items, pending = q.items, self.pending
        while True:
            seq, key = items[0]
            ent = pending.get(key)
            if ent is not None and ent[1] == seq:
                return seq, key
            items.popleft()

    def drop(self, q: ShapeQueue) -> None:
        del self.queues[q.qid]
        del self.index[(q.priority, q.shape)]

    def take(self, key: Hashable) -> None:
        """Remove one pending task (started, cancelled or impossible)."""
        qid, _ = self.pending.pop(key)
        q = self.queues[qid]
        q.live -= 1
        if not q.shared:
            self.n_exclusive -= 1
        if q.live == 0:
            self.drop(q)

    def live_keys(self, q: ShapeQueue) -> list[Hashable]:
        return [k for s, k in q.items if (e := self.pending.get(k)) is not None and e[1] == s]
