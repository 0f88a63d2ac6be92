"""Task starts and cancels through the interchange.

``Started`` (pool → front-end) is passed on for the tasks still in flight on that pool.
``Cancel`` (front-end → pools) takes the cancelled tasks still queued here out of the queue and
sends each pool a ``Cancel`` for those it holds; an id the interchange does not know yet (a lone
task sent on the front-end's submit socket can arrive after the cancel that followed it) is
remembered, and the task is dropped when it arrives.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..protocol.batches import Task
from ..protocol.messages import Cancel, Started

if TYPE_CHECKING:
    from .interchange import Interchange
    from .pools import Pool

#: ids of cancels that came before their task, at most (the oldest are forgotten: a task that
#: already ended is never sent again)
EARLY_LIMIT = 65536


def forward_started(ix: Interchange, pool: Pool, msg: Started) -> None:
    ids = [i for i in msg.task_ids if i in pool.in_flight]
    if ids:
        ix.to_client(Started(ids).encode())


def route_cancel(ix: Interchange, msg: Cancel) -> None:
    wanted = set(msg.task_ids)
    unknown = wanted - ix.known
    for task_id in ix.queue.remove(wanted & ix.known):
        ix.known.discard(task_id)
        wanted.discard(task_id)
    for pool in ix.pools:
        held = pool.in_flight.keys() & wanted
        if held:
            ix.send_pool(pool.identity, Cancel(sorted(held)).encode())
    early = ix.early_cancels
    early.update(dict.fromkeys(unknown))
    while len(early) > EARLY_LIMIT:
        del early[next(iter(early))]


def drop_cancelled(ix: Interchange, tasks: Iterable[Task]) -> list[Task]:
    """The tasks of an arriving batch whose cancel did not come first."""
    early = ix.early_cancels
    kept = []
    for task in tasks:
        if task.task_id in early:
            del early[task.task_id]
        else:
            kept.append(task)
    return kept
