"""Handing 1-rank shared tasks to worker ranks in batches: the scheduler's hot path.

A shared task may wait on a rank behind others (prefetch, up to ``depth`` per rank), so the
least-loaded open ranks are taken from the inventory's heap and each gets a batch at once.
"""

from __future__ import annotations

from collections.abc import Hashable

from .inventory import RankInventory
from .queues import PendingTasks, ShapeQueue
from .shapes import Assignment

Running = dict[Hashable, tuple[tuple[int, ...], bool, tuple[int, ...]]]


def assign_shared(inv: RankInventory, pend: PendingTasks, running: Running, q: ShapeQueue,
                  out: list[Assignment], per: dict[int, int],
                  given: dict[int, dict[int, int]]) -> bool:
    """Hand 1-rank tasks of q to the least-loaded open ranks, in batches.

    A rank gets at most min(depth - held, ceil(pending / open ranks)) tasks from q per
    assign() call.  Stops before passing the next queue's head (FIFO across shapes of
    one priority).  Returns False when no open rank is left for q in this call."""
    if inv.n_open == 0:
        return False
    cap = per.setdefault(q.qid, -(-q.live // inv.n_open))
    got = given.setdefault(q.qid, {})
    heap = pend.heap
    bound = heap[0][:2] if heap else None
    negp = -q.priority
    items, pending, held = q.items, pend.pending, inv.held
    skipped: set[int] = set()
    more = False
    while not more:
        r = inv.pop_rank()
        if r is None:
            break
        k = min(inv.depth - held[r], cap - got.get(r, 0))
        if k <= 0:
            skipped.add(r)
            continue
        n, ranks, gen = 0, (r,), (inv.gen[r],)
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
            inv.contrib(r, -1)
            held[r] += n
            inv.contrib(r, 1)
            got[r] = got.get(r, 0) + n
        else:
            skipped.add(r)
    for r in skipped:
        inv.push_rank(r)
    if not q.live:
        pend.drop(q)
    return more
