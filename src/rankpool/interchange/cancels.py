"""Task starts and cancels through the interchange.

``Started`` (pool → front-end) is passed on for the tasks still in flight on that pool.
``Cancel`` (front-end → pools) takes the cancelled tasks still queued here out of the queue,
answers ``Cancelled`` for them, and sends each pool a ``Cancel`` for those it holds (the pool
answers for each: see :mod:`rankpool.frontends.cancelling`); an id the interchange does not
know yet (a lone task sent on the front-end's submit socket can arrive after the cancel that
followed it) is remembered, and the task is dropped, and answered, when it arrives. An id that
already ended needs no answer: its result went first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocol.messages import Cancel, Cancelled, Started, id_slices

if TYPE_CHECKING:
    from .endpoints import Endpoints
    from .pools import Pool

#: ids of cancels that came before their task, at most (the oldest are forgotten: a task that
#: already ended is never sent again)
EARLY_LIMIT = 65536


def forward_started(ix: Endpoints, pool: Pool, msg: Started) -> None:
    ids = [i for i in msg.task_ids if i in pool.in_flight]
    if ids:
        ix.to_client(Started(ids).encode())


def route_cancel(ix: Endpoints, msg: Cancel) -> None:
    wanted = set(msg.task_ids)
    unknown = wanted - ix.known
    removed = ix.queue.remove(wanted & ix.known)
    for task_id in removed:
        ix.known.discard(task_id)
        wanted.discard(task_id)
    answer_cancelled(ix, removed)
    for pool in ix.pools:
        held = pool.in_flight.keys() & wanted
        if held:
            ix.send_pool(pool.identity, Cancel(sorted(held)).encode())
    early = ix.early_cancels
    early.update(dict.fromkeys(unknown))
    while len(early) > EARLY_LIMIT:
        del early[next(iter(early))]


def drop_cancelled(ix: Endpoints, task_ids: list[int]) -> set[int]:
    """Where, in an arriving batch's ids, the tasks whose cancel came first are: they are
    answered, and dropped."""
    early = ix.early_cancels
    dropped: set[int] = set()
    for k, task_id in enumerate(task_ids):
        if task_id in early:
            del early[task_id]
            dropped.add(k)
    answer_cancelled(ix, [task_ids[k] for k in sorted(dropped)])
    return dropped


def answer_cancelled(ix: Endpoints, task_ids: list[int]) -> None:
    """Tell the front-end that these tasks were dropped here, unstarted."""
    for part in id_slices(task_ids):
        ix.to_client(Cancelled(part).encode())
