"""The record table that task and result batches share, so that a flood of small tasks costs
few frames::

    [header, blob, big_buffer_1, big_buffer_2, ...]

The JSON header holds what is per batch (its kind, the record count ``n``, for tasks the
tables of functions and specifications); the records themselves are a table of 64-bit
integers at the start of ``blob``, ``WIDTH`` per record, so that no process decodes or checks
a JSON list per task (summing and bounding a column is one pass in C). The rest of ``blob`` is
every record's small pieces in order; buffers of at least ``serialize.OOB_THRESHOLD`` bytes
follow as frames of their own, in record order. Nothing here unpickles: payloads are bytes
routed by their header. Task batches: :mod:`.batches`; result batches: :mod:`.result_batches`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import ProtocolError
from .wire import Buffer, is_int

#: integers per task record and per result row
WIDTH = 5


def take_frames(frames: Sequence[Buffer], index: int, count: int) -> Sequence[Buffer]:
    """``count`` frames from ``index`` on (a record's buffers)."""
    return list(frames[index:index + count]) if count else ()


def record_count(header: dict[str, Any], frames: Sequence[Buffer], what: str) -> int:
    """The checked record count of a batch's header (``what``: task or result)."""
    n = header.get("n")
    if not (is_int(n) and n >= 0 and frames):
        raise ProtocolError(f"{what} batch without a record count or blob")
    return n


def record_columns(table: list[int]) -> list[list[int]]:
    """The ``WIDTH`` columns of a record table."""
    return [table[i::WIDTH] for i in range(WIDTH)]


def check_column(column: list[int], low: int, high: float, what: str) -> None:
    """Every value of a record column lies in [low, high).

    A column of one value throughout (one function, one spec, no buffers: a flood's batch)
    costs one ``count`` pass, which compares small ints by identity, in place of two."""
    if not column:
        return
    first = column[0]
    if column.count(first) == len(column):
        inside = low <= first < high
    else:
        inside = min(column) >= low and max(column) < high
    if not inside:
        raise ProtocolError(f"{what} out of range [{low}, {high}) in a batch")
