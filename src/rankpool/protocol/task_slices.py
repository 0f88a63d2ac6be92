"""Tasks kept as runs of the batches they came in, and sent on as slices of them.

The interchange builds no object per task: a received batch (:class:`~.batches.Received`)
is queued as :class:`Run` s, each a range of consecutive records that share a
specification, with their task ids. A run is cut where a pool takes part of it (at 10,000
pools, a 1,024-task batch goes out as eight runs of 128), and leaves as a message of its own:
the batch's function and specification tables as they were (the records' indexes into them
stay valid), its slice of the record table, the function payloads, its slice of the data and
its buffer frames. A run of a whole batch is the message as it came. Nothing is re-packed per
task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from ..task.resources import Spec
from .batches import Received, Task
from .records import WIDTH
from .wire import INT_SIZE, encode_header

#: record table bytes per task
_RECORD = WIDTH * INT_SIZE


@dataclass(slots=True)
class Run:
    """Records ``start`` to ``start + len(ids)`` of a received batch, of one ``spec``."""

    source: Received
    start: int
    ids: list[int]
    spec: Spec

    def take(self, k: int) -> Run:
        """Cut off the first ``k`` tasks as a run of their own; this run keeps the rest."""
        head = Run(self.source, self.start, self.ids[:k], self.spec)
        self.start += k
        self.ids = self.ids[k:]
        return head

    def tasks(self) -> list[Task]:
        """The run's tasks, built (a run sent in a message of its own never needs them)."""
        return self.source.tasks(self.start, self.start + len(self.ids))

    def without(self, drop: set[int]) -> list[tuple[int, Run]]:
        """The pieces of this run left when the tasks at ``drop`` (offsets into the run) are
        taken out, each with its first task's offset."""
        return [(i, Run(self.source, self.start + i, self.ids[i:j], self.spec))
                for _, i, j in _spans(len(self.ids), lambda k: None if k in drop else 0)]


def runs_of(batch: Received, skip: set[int] | None = None) -> list[Run]:
    """A received batch as runs of consecutive records of one spec, leaving out the records
    at ``skip`` (a batch's tasks mostly share one spec: one run)."""
    if batch.spec_index is None and not skip:
        return [Run(batch, 0, batch.ids, batch.specs[0])] if batch.n else []
    specs, ids = batch.specs, batch.ids
    index = batch.spec_index or [0] * batch.n
    skip = skip or set()
    return [Run(batch, i, ids[i:j], specs[si])
            for si, i, j in _spans(batch.n, lambda k: None if k in skip else index[k])]


def _spans(n: int, key: Callable[[int], int | None]) -> Iterator[tuple[int, int, int]]:
    """``(key, first, end)`` of each span of consecutive indexes below ``n`` that share a key;
    indexes whose key is None are left out."""
    for k, group in groupby(range(n), key):
        if k is not None:
            at = list(group)
            yield k, at[0], at[-1] + 1


def sliced(runs: Sequence[Run], most: int) -> list[tuple[int, Sequence[Any]]] | None:
    """``runs`` (in order) as slices of their batches, a run that continues the one before
    it joined to it: ``(how many runs, frames)`` per message. ``None`` when there would be
    more than ``most`` messages (encoding their tasks anew as one costs less then), or a
    batch's message was not kept."""
    spans: list[list[Any]] = []  # [source, start, end, runs]
    for run in runs:
        end = run.start + len(run.ids)
        last = spans[-1] if spans else None
        if last is not None and last[0] is run.source and last[2] == run.start:
            last[2] = end
            last[3] += 1
            continue
        if len(spans) == most or run.source.message is None:
            return None
        spans.append([run.source, run.start, end, 1])
    return [(count, _frames(source, i, j)) for source, i, j, count in spans]


def _frames(source: Received, i: int, j: int) -> Sequence[Any]:
    """The message of records ``i`` to ``j`` (exclusive) of a received batch."""
    if i == 0 and j == source.n:
        assert source.message is not None
        return source.message
    blob = source.body[0]
    data_from, data_to = source.data_span(i, j)
    frame_from, frame_to = source.frame_span(i, j)
    header = {"k": source.kind, "n": j - i, "f": source.fn_table, "s": source.spec_table}
    return [encode_header(header),
            b"".join((blob[i * _RECORD:j * _RECORD], source.heads, blob[data_from:data_to])),
            *source.body[frame_from:frame_to]]
