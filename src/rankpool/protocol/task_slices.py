"""Tasks sent on as slices of the batches they came in, not encoded anew.

A batch that the interchange splits over pools (at 10,000 pools, a 1,024-task batch goes out
as eight runs of 128) leaves as runs of consecutive tasks of one received batch. A run is a
message of its own: the batch's function and specification tables as they were (the
records' indexes into them stay valid), its slice of the record table, the function
payloads, its slice of the data and its buffer frames. A run of a whole batch is the message
as it came. Nothing is re-packed per task: the only per-task work is finding the runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Any

from .batches import WIDTH, Received, Task
from .wire import INT_SIZE, encode_header

#: record table bytes per task
_RECORD = WIDTH * INT_SIZE
_source, _index = attrgetter("source"), attrgetter("index")


def sliced(tasks: Sequence[Task], most: int) -> list[tuple[int, Sequence[Any]]] | None:
    """``tasks`` (in order) as slices of their received batches: ``(count, frames)`` per run.

    ``None`` when a task was not decoded with its batch kept, or the tasks make more than
    ``most`` runs (encoding them anew as one message then costs less than the messages).
    """
    if not tasks:
        return []
    first = tasks[0]
    source, start = first.source, first.index
    if source is not None and list(map(_source, tasks)).count(source) == len(tasks):
        indexes = list(map(_index, tasks))  # one run, the common case, checked in C
        if indexes == list(range(start, start + len(tasks))):
            return [(len(tasks), _frames(source, start, start + len(tasks)))]
    runs: list[tuple[Received, int, int]] = []
    following = start + 1
    for task in tasks[1:]:
        if task.source is source and task.index == following:
            following += 1
            continue
        if source is None or len(runs) + 1 >= most:
            return None
        runs.append((source, start, following))
        source, start = task.source, task.index
        following = start + 1
    if source is None:
        return None
    runs.append((source, start, following))
    return [(j - i, _frames(src, i, j)) for src, i, j in runs]


def _frames(source: Received, i: int, j: int) -> Sequence[Any]:
    """The message of records ``i`` to ``j`` (exclusive) of a received batch."""
    if i == 0 and j == source.n:
        return source.message
    blob = source.body[0]
    data_from, data_to = source.data_span(i, j)
    frame_from, frame_to = source.frame_span(i, j)
    header = {"k": source.kind, "n": j - i, "f": source.fns, "s": source.specs}
    return [encode_header(header),
            b"".join((blob[i * _RECORD:j * _RECORD], source.heads, blob[data_from:data_to])),
            *source.body[frame_from:frame_to]]
