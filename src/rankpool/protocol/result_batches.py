"""Result batches on the wire: a row of the record table (:mod:`.records`) per outcome of a
finished task, ``task_id, rank, flags, length, buffers``, the outcomes' pickled values or
errors after the table, their large buffers as frames of their own. A flood's results travel
as two columns (:data:`Values`): their ids, and their values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from typing import Any

from ..errors import ProtocolError
from .records import WIDTH, check_column, record_columns, record_count, take_frames
from .wire import INT_SIZE, Buffer, Frames, encode_header, pack_ints, unpack_ints


@dataclass(slots=True)
class Outcome:
    """What one rank of a task produced: a pickled value (``ok``) or a pickled error."""

    rank: int
    ok: bool
    data: Buffer
    buffers: Sequence[Buffer] = ()


@dataclass(slots=True)
class Result:
    """A finished task.

    ``outcomes`` holds the root's value for a successful ``results="root"`` task, every rank's
    value in rank order for ``results="all"``, and the failing ranks' errors otherwise (the
    first one is raised, the others become notes).
    """

    task_id: int
    outcomes: list[Outcome]

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)


#: result row flags: the outcome is a value (else an error); the row adds an outcome to the
#: result of the row before it (same task)
OK, MORE = 1, 2

#: results of one successful outcome without buffers each (a flood's), as two columns: their
#: task ids, and their pickled values in the same order
Values = tuple[Sequence[int], Sequence[Buffer]]
NO_VALUES: Values = ((), ())



def encode_results(results: Sequence[Result], values: Values = NO_VALUES) -> Frames:
    """One message for many results: a row ``task_id, rank, flags, length, buffers`` per
    outcome; rows after a task's first carry the ``MORE`` flag. ``values`` are more results,
    each one successful outcome of rank 0 without buffers, in columns (what
    :func:`split_results` gives back); their rows come first."""
    rows: list[int] = []
    ids, datas = values
    blob: list[Buffer] = list(datas)
    big: list[Buffer] = []
    for task_id, data in zip(ids, datas):
        rows += (task_id, 0, OK, len(data), 0)
    for r in results:
        more = 0
        for o in r.outcomes:
            rows += (r.task_id, o.rank, more | (OK if o.ok else 0), len(o.data), len(o.buffers))
            blob.append(o.data)
            if o.buffers:
                big.extend(o.buffers)
            more = MORE
    return [results_header(len(rows) // WIDTH), b"".join([pack_ints(rows), *blob]), *big]


@lru_cache(maxsize=256)
def results_header(rows: int) -> bytes:
    """The header of a result batch of ``rows`` rows (kept: batches repeat a few sizes)."""
    return encode_header({"k": "results", "n": rows})


def join_results(parts: Sequence[tuple[int, Sequence[Buffer]]]) -> Frames:
    """One result batch from several checked ones, each given as ``(rows, frames after the
    header)``: their row tables, then their data, then their buffer frames, in order."""
    tables: list[memoryview] = []
    data: list[memoryview] = []
    big: list[Buffer] = []
    for rows, frames in parts:
        blob = memoryview(frames[0])
        tables.append(blob[:WIDTH * INT_SIZE * rows])
        data.append(blob[WIDTH * INT_SIZE * rows:])
        big.extend(frames[1:])
    return [results_header(sum(rows for rows, _ in parts)), b"".join(tables + data), *big]


def _ids(columns: list[list[int]]) -> list[int]:
    """Task ids of result rows' columns: one per result, not per outcome."""
    ids, flags = columns[0], columns[2]
    if max(flags, default=0) & MORE:
        return [tid for tid, f in zip(ids, flags) if not f & MORE]
    return ids


def _rows(header: dict[str, Any], frames: Sequence[Buffer]) -> tuple[list[list[int]], int]:
    """The checked columns of a result batch's rows and where its data starts in the blob."""
    n = record_count(header, frames, "result")
    columns = record_columns(unpack_ints(frames[0], WIDTH * n))
    start = WIDTH * INT_SIZE * n
    ids, ranks, flags, lens, nbufs = columns
    check_column(ranks, 0, 2 ** 31, "rank")
    check_column(flags, 0, (OK | MORE) + 1, "outcome flags")
    check_column(lens, 0, len(frames[0]) + 1, "result length")
    check_column(nbufs, 0, len(frames), "buffer count")
    if flags and flags[0] & MORE:
        raise ProtocolError("result batch starts with a continued result")
    if start + sum(lens) != len(frames[0]):
        raise ProtocolError(f"result data of {sum(lens)} bytes does not fill the "
                            f"{len(frames[0]) - start} bytes of blob left")
    if 1 + sum(nbufs) != len(frames):
        raise ProtocolError(f"result batch names {sum(nbufs)} buffers; {len(frames) - 1} came")
    if max(flags, default=0) & MORE:
        for i in range(1, len(flags)):
            if flags[i] & MORE and ids[i] != ids[i - 1]:
                raise ProtocolError(f"outcome of task {ids[i]} continues task {ids[i - 1]}")
    return columns, start


def decode_results(header: dict[str, Any], frames: Sequence[Buffer]) -> list[Result]:
    columns, pos = _rows(header, frames)
    return _results(columns, pos, frames)


#: longest value :func:`split_results` looks for as the same in every result of a batch
_SAME_AT_MOST = 64


def split_results(header: dict[str, Any],
                  frames: Sequence[Buffer]) -> tuple[Values, list[Result]]:
    """A result batch as ``(values, results)``, checked as :func:`decode_results` checks it.

    When every result is one successful outcome without buffers (a flood of small tasks),
    ``values`` holds them in columns (ids, and the values as slices of the batch) and no
    :class:`Result` is built; otherwise ``results`` holds them all. Where every value is
    the same few bytes (a flood of tasks that return None), they are one ``bytes`` object.
    """
    columns, pos = _rows(header, frames)
    flags = columns[2]
    if len(frames) > 1 or flags.count(OK) != len(flags):
        return NO_VALUES, _results(columns, pos, frames)
    lengths, n = columns[3], len(flags)
    if n and lengths[0] <= _SAME_AT_MOST and lengths.count(lengths[0]) == n:
        size = lengths[0]
        first = bytes(frames[0][pos:pos + size])
        if frames[0][pos:pos + size * n] == first * n:
            return (columns[0], [first] * n), []
    bounds = list(accumulate(lengths, initial=pos))
    cut = memoryview(frames[0]).__getitem__
    return (columns[0], list(map(cut, map(slice, bounds, bounds[1:])))), []


def _results(columns: list[list[int]], pos: int, frames: Sequence[Buffer]) -> list[Result]:
    blob = memoryview(frames[0])
    results: list[Result] = []
    nxt = 1
    for tid, rank, flags, length, nbuf in zip(*columns):
        outcome = Outcome(rank, bool(flags & OK), blob[pos:pos + length],
                          take_frames(frames, nxt, nbuf) if nbuf else ())
        pos += length
        nxt += nbuf
        if flags & MORE:
            results[-1].outcomes.append(outcome)
        else:
            results.append(Result(tid, [outcome]))
    return results


def check_results(header: dict[str, Any], frames: Sequence[Any]) -> list[int]:
    """Check that a result batch is one :func:`decode_results` accepts, without slicing it;
    return its task ids.

    The interchange uses it so a batch the front-end could not read is failed rather than
    forwarded.
    """
    return _ids(_rows(header, frames)[0])


def result_ids(header: dict[str, Any], frames: Sequence[Buffer]) -> list[int]:
    """Task ids of a result batch, from its rows alone, unchecked (what a malformed batch
    still says about the tasks it ends)."""
    n = record_count(header, frames, "result")
    return _ids(record_columns(unpack_ints(frames[0], WIDTH * n)))
