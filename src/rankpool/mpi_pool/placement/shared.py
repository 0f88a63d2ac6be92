"""Handing 1-rank shared tasks to worker ranks in batches: the scheduler's hot path.

A shared task may wait on a rank behind others (prefetch, up to ``depth`` per rank), so the
least-loaded open ranks are taken from the inventory's heap and each gets a batch at once. A
reserved rank lent to shared tasks takes one at a time: each loan delays the reservation by
one task, so a batch would multiply the delay. For the same reason, while exclusive tasks are
pending a rank holds at most ``WAITING_DEPTH`` shared tasks (one running, one next): a wide
task's reservation waits for every task queued on its ranks, and run times are unknown.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from itertools import repeat, starmap
from operator import itemgetter

from .inventory import RankInventory
from .queues import PendingTasks, ShapeQueue
from .shapes import Assignment

#: Most shared tasks a rank holds while exclusive tasks are pending (if ``depth`` allows).
WAITING_DEPTH = 2

_new = tuple.__new__
_key_of = itemgetter(1)  # of a queue entry (seq, key)

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
    # the last sequence number of q that comes before the next queue's head: (priority,
    # arrival) order across queues
    last: float = math.inf
    if heap:
        negp, head = -q.priority, heap[0][:2]
        if head[0] < negp:  # a higher priority is next: nothing of q comes first
            last = -math.inf
        elif head[0] == negp:
            last = head[1]
    items, pending, held, spare = q.items, pend.pending, inv.held, inv.spare
    popleft, pop = items.popleft, pending.pop
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
        k = min(k, q.live)
        held_by = (ranks, False, gen)  # what running keeps of each of them (read only)
        if len(items) == q.live and items[k - 1][0] <= last:
            # no cancelled entry in q and all k before the next queue's head (the common
            # case): k taken in bulk, each step a pass in C
            keys = list(map(_key_of, starmap(popleft, repeat((), k))))
            list(map(pop, keys))
            running.update(dict.fromkeys(keys, held_by))
            out.extend(map(_new, repeat(Assignment), zip(keys, repeat(ranks))))
            n = k
        while n < k:
            seq, key = popleft()
            ent = pop(key, None)
            if ent is None or ent[1] != seq:  # cancelled, or queued again since
                if ent is not None:
                    pending[key] = ent
                continue
            if seq > last:  # past the next queue's head (FIFO across shapes): not now
                pending[key] = ent
                items.appendleft((seq, key))
                more = True
                break
            running[key] = held_by
            out.append(_new(Assignment, (key, ranks)))  # Assignment(key, ranks), in C
            n += 1
        q.live -= n
        if not q.live:
            more = True
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
