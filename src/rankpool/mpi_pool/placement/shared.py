"""Handing 1-rank shared tasks to worker ranks in batches: the scheduler's hot path.

A shared task may wait on a rank behind others (prefetch, up to ``depth`` per rank), so the
least-loaded open ranks are taken from the inventory's heap and each gets a batch at once. A
reserved rank lent to shared tasks takes one at a time: each loan delays the reservation by
one task, so a batch would multiply the delay. For the same reason, while exclusive tasks are
pending a rank holds at most ``WAITING_DEPTH`` shared tasks (one running, one next): a wide
task's reservation waits for every task queued on its ranks, and run times are unknown.
"""

from __future__ import annotations

from collections.abc import Hashable

from .inventory import RankInventory
from .queues import PendingTasks, ShapeQueue
from .shapes import Assignment

#: Most shared tasks a rank holds while exclusive tasks are pending (if ``depth`` allows).
WAITING_DEPTH = 2

_new = tuple.__new__

Running = dict[Hashable, tuple[tuple[int, ...], bool, tuple[int, ...]]]


def assign_shared(inv: RankInventory, pend: PendingTasks, running: Running, q: ShapeQueue,
                  out: list[Assignment], per: dict[int, int],
                  given: dict[int, dict[int, int]]) -> bool:
    """Hand 1-rank tasks of q to the least-loaded open ranks, in batches.

    A rank gets at most min(depth - held, ceil(pending / open ranks)) tasks from q per
    assign() call, and holds at most WAITING_DEPTH while exclusive tasks are pending.  Where
    no open rank is idle, an idle reserved rank that may still be lent (``inv.spare``) takes
    one task before loaded open ranks queue more.  Stops before passing
    the next queue's head (FIFO across shapes of one priority).  Returns False when no open
    or spare rank is left for q in this call."""
    if inv.n_open == 0 and not inv.spare:
        return False
    cap = per.setdefault(q.qid, -(-q.live // max(inv.n_open, 1)))
    got = given.setdefault(q.qid, {})
    heap = pend.heap
    bound = heap[0][:2] if heap else None
    negp = -q.priority
    items, pending, held, spare = q.items, pend.pending, inv.held, inv.spare
    depth = min(inv.depth, WAITING_DEPTH) if pend.n_exclusive else inv.depth
    skipped: set[int] = set()
    lendable: list[int] = []
    back: int | None = None  # an open rank put off while a spare rank is lent instead
    more = False
    while not more:
        r = inv.pop_rank() if back is None else back
        back = None
        lent = False
        if spare and (r is None or held[r]):
            if not lendable:
                lendable = inv.lendable()[::-1]
            while lendable and lendable[-1] not in spare:
                lendable.pop()
            if lendable:
                back, r, lent = r, lendable.pop(), True
        if r is None:
            break
        k = 1 if lent else min(depth - held[r], cap - got.get(r, 0))
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
            out.append(_new(Assignment, (key, ranks)))  # Assignment(key, ranks), in C
            n += 1
            q.live -= 1
            if not q.live:
                more = True
                break
        if n:
            inv.take_shared(r, n)
            if not lent:
                got[r] = got.get(r, 0) + n
        elif not lent:
            skipped.add(r)
    if back is not None:
        skipped.add(back)
    for r in skipped:
        inv.push_rank(r)
    if not q.live:
        pend.drop(q)
    return more
