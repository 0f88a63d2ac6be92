"""The interchange's data path: task batches queued and dispatched to pools with room, result
batches accounted for and passed on to the front-end (see ``docs/internals.md``).

Payloads move as bytes, and a batch is queued as runs of it, with no object per task: a batch
one pool takes whole is sent on in the front-end's own frames, runs of a batch split over
pools as slices of it (:mod:`rankpool.protocol.task_slices`), and tasks scattered over many
batches are built and encoded anew as one batch per pool (in messages under the run's cap);
result batches are forwarded as they came, or only their known tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..errors import ProtocolError
from ..protocol.batches import encode_tasks, receive_tasks, task_ids
from ..protocol.messages import Lost, LostCause
from ..protocol.result_batches import check_results, decode_results, encode_results, result_ids
from ..protocol.task_slices import runs_of, sliced
from ..protocol.wire import Buffer, decode_header, under_cap
from .cancels import drop_cancelled
from .endpoints import Frames
from .matching import Entry, match
from .membership import PoolMembership
from .pools import Pool

log = logging.getLogger(__name__)

#: most slices of received batches one pool's tasks of a pass are sent in; tasks from more
#: runs than this are encoded anew as one batch
MOST_SLICES = 4


class Routing(PoolMembership):
    """Tasks in, to pools, results out (the loop that calls these:
    :class:`~.interchange.Interchange`)."""

    def on_tasks(self, header: dict[str, Any], frames: Frames) -> None:
        """Queue a task batch (``frames``: its header frame and body) as runs of it."""
        body = [f.buffer for f in frames[1:]]
        try:
            batch = receive_tasks(header, body, message=frames)
        except ProtocolError as exc:
            self._refuse_batch(task_ids(header, body), str(exc))
            raise
        ids = batch.ids
        skip = drop_cancelled(self, ids) if self.early_cancels else set()
        known = self.known
        if not skip and known.isdisjoint(ids):
            size = len(known)
            known.update(ids)
            if len(known) - size == len(ids):  # no id seen twice (the rule): queued at once
                self.queue.push_many(runs_of(batch))
                self._dirty = True
                return
            known.difference_update(ids)  # a batch that repeats an id: one at a time
        for k, task_id in enumerate(ids):
            if k in skip:
                continue
            if task_id in known:
                self._throttle.warn("task id %d is already queued or running; duplicate dropped",
                                    task_id)
                skip.add(k)
                continue
            known.add(task_id)
        self.queue.push_many(runs_of(batch, skip))
        self._dirty = True

    def _refuse_batch(self, ids: list[int], why: str) -> None:
        """Fail the tasks of a batch that cannot be read, when their ids can be, so none hangs."""
        ids = [i for i in ids if i not in self.known]
        if ids:
            self.finished += len(ids)
            self.to_client(Lost("", [], f"interchange refused a malformed task batch: {why}",
                                ids, LostCause.MALFORMED_TASKS).encode())

    def dispatch(self) -> None:
        """Send queued tasks to pools with room: one batch per pool per pass (in messages
        under the run's cap: tasks of several front-end batches may go in one)."""
        self._dirty = False
        for pool, entries in match(self.queue, self.room):
            sent = 0
            if not pool.gone:
                for count, frames in self._messages(entries):
                    if not self._send_pool(pool.identity, frames):
                        break
                    sent += count
                if sent == len(entries):
                    self.pools.sent(pool, self._now)
                    continue
            unsent = entries[sent:]
            pool.finish_many([task_id for _, run in unsent for task_id in run.ids])
            self.queue.push_back(unsent)
            self._dirty = True
            if not pool.gone:
                self.lose(pool, "connection to the pool lost", LostCause.CONNECTION_LOST,
                          tell_pool=False)

    def _messages(self, entries: list[Entry]) -> list[tuple[int, Sequence[Any]]]:
        """One pool's runs of a pass as messages: ``(how many entries, frames)`` each.

        Slices of the batches they came in (each no larger than a batch this interchange
        took), or their tasks encoded anew as one batch, halved while it is over the run's
        cap (a run alone never is: it was part of a batch the cap let in)."""
        slices = sliced([run for _, run in entries], MOST_SLICES)
        if slices is not None:
            return slices
        return [(len(part), frames) for part, frames in
                under_cap(entries, _encode_entries, self.config.max_message_size)]

    def on_results(self, pool: Pool, header: dict[str, Any], frames: Frames) -> None:
        """Account for a result batch and pass it on unchanged (or only its known tasks).

        The front-end forwards what one drain of the pool socket took as one message."""
        body: list[Buffer] = [f.buffer for f in frames[1:]]
        try:
            ids = check_results(header, body)
        except ProtocolError as exc:
            # the tasks ended but their results cannot be delivered: fail them rather than hang
            done = self._ended(pool, result_ids(header, body))
            if done:
                self.to_client(Lost(pool.block_id, pool.hosts, f"malformed result batch: {exc}",
                                    done, LostCause.MALFORMED_RESULTS).encode())
            raise
        done = self._ended(pool, ids)
        out: Sequence[Any] = frames
        rows = header["n"]
        if len(done) < len(ids):
            self._throttle.warn("pool %r returned %d results of tasks not in flight there; "
                                "dropped", pool.pool_id, len(ids) - len(done))
            if not done:
                return
            keep = set(done)
            out = encode_results([r for r in decode_results(header, body) if r.task_id in keep])
            rows, body = decode_header(out[0])["n"], out[1:]
        assert self.front is not None
        self.front.forward_results(rows, out, body)

    def _ended(self, pool: Pool, ids: list[int]) -> list[int]:
        """Account for tasks a pool says ended; return those that were in flight there."""
        done = pool.finish_many(ids)
        self.known.difference_update(done)
        self.finished += len(done)
        self.room.offer(pool)
        self._dirty = True
        return done


def _encode_entries(entries: list[Entry]) -> Sequence[Any]:
    return encode_tasks([task for _, run in entries for task in run.tasks()])

