"""Pending tasks of the pool manager: one FIFO per ``(priority, shape)``, heads in a heap.

Only queue heads are ever examined, so a task that cannot start waits at the head of its own
queue without blocking others. Cancelled tasks are skipped lazily: an entry counts only while
``pending`` still maps its key to the same sequence number.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Hashable

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
        # the queue of the last add: a batch's tasks share one Shape object, and this spares
        # hashing it (five fields) for each
        self._last: tuple[Shape, int, ShapeQueue] | None = None

    def add(self, key: Hashable, shape: Shape, priority: int) -> ShapeQueue:
        last = self._last
        if last is not None and last[0] is shape and last[1] == priority \
                and self.queues.get(last[2].qid) is last[2]:  # still live
            q: ShapeQueue | None = last[2]
        else:
            q = self.index.get((priority, shape))
        seq = self.seq
        self.seq += 1
        if q is None:
            q = ShapeQueue(seq, priority, shape)  # seq doubles as a unique queue id
            self.queues[q.qid] = self.index[(priority, shape)] = q
            heapq.heappush(self.heap, (-priority, seq, q.qid))
        self._last = (shape, priority, q)
        q.items.append((seq, key))
        q.live += 1
        self.pending[key] = (q.qid, seq)  # ints only: nothing for the GC to walk
        if not q.shared:
            self.n_exclusive += 1
        return q

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
