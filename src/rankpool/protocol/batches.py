"""Tasks and results on the wire, in batches, so that a flood of small tasks costs few frames::

    [header, blob, big_buffer_1, big_buffer_2, ...]

The JSON header holds what is per batch (its kind, the record count ``n``, the tables of
functions and specifications); the records themselves are a table of 64-bit integers at the
start of ``blob``, five per record, so that no process decodes or checks a JSON list per task
(summing and bounding a column is one pass in C). The rest of ``blob`` is every record's small
pieces in order; buffers of at least ``serialize.OOB_THRESHOLD`` bytes follow as frames of
their own, in record order. Nothing here unpickles: payloads are bytes routed by their header.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate, repeat
from typing import Any

from ..errors import ProtocolError, ResourceSpecError
from ..task.resources import Spec
from .wire import (
    INT_SIZE,
    Buffer,
    Frames,
    encode_header,
    is_int,
    pack_ints,
    unpack_ints,
)


@dataclass(slots=True)
class Task:
    """One task: what to run (a function digest and payload) and its arguments."""

    task_id: int
    spec: Spec
    fn_digest: bytes
    fn: Buffer
    data: Buffer
    buffers: Sequence[Buffer] = ()


class Received:
    """A checked task batch, as :func:`receive_tasks` reads it without building a task.

    ``ids`` are its task ids in record order; ``specs`` its distinct specifications, and
    ``spec_index`` each record's index there (None when there is one); ``message`` is the
    batch's frames as they came, header frame first, when kept: runs of its tasks are sent on
    in it, or as slices of ``body`` (the frames after the header; see
    :mod:`rankpool.protocol.task_slices`). :meth:`tasks` builds the tasks of a range.
    """

    __slots__ = ("kind", "fn_table", "spec_table", "body", "n", "ids", "specs", "spec_index",
                 "heads", "message", "_fns", "_data_at", "_frame_at", "_fn_index")

    def __init__(self, header: dict[str, Any], body: Sequence[Buffer], ids: list[int],
                 fns: list[tuple[bytes, Buffer]], fn_index: list[int] | None, specs: list[Spec],
                 spec_index: list[int] | None, heads: memoryview, data_at: list[int],
                 frame_at: list[int] | None, message: Sequence[Any] | None) -> None:
        self.kind, self.fn_table, self.spec_table = header["k"], header["f"], header["s"]
        self.body, self.n, self.ids = body, len(ids), ids
        self.specs, self.spec_index = specs, spec_index
        self.heads = heads  # the function payloads, between the record table and the data
        self.message = message
        self._fns, self._fn_index = fns, fn_index  # (digest, payload); None: one function
        self._data_at = data_at  # where each record's data starts in the blob, and the end
        self._frame_at = frame_at  # where each record's buffer frames start; None: no buffers

    def data_span(self, i: int, j: int) -> tuple[int, int]:
        """Where the data of records ``i`` to ``j`` (exclusive) lies in the blob."""
        return self._data_at[i], self._data_at[j]

    def frame_span(self, i: int, j: int) -> tuple[int, int]:
        """Which body frames hold the buffers of records ``i`` to ``j`` (exclusive)."""
        if self._frame_at is None:
            return 1, 1
        return self._frame_at[i], self._frame_at[j]

    def tasks(self, i: int, j: int, copy: bool = False) -> list[Task]:
        """The tasks of records ``i`` to ``j`` (exclusive): payloads are memoryview slices of
        the blob unless ``copy`` (then ``bytes``; tasks of one function share one object)."""
        n = j - i
        blob = memoryview(self.body[0])
        fns = self._fns
        if copy:
            fns = [(digest, bytes(payload)) for digest, payload in fns]
        # one pass of Task() calls, every column fed in C: a flood's batch has one function
        # and one spec, and no buffers
        cut = (bytes(blob) if copy else blob).__getitem__
        data_at = self._data_at
        datas = map(cut, map(slice, data_at[i:j], data_at[i + 1:j + 1]))
        digests: Iterable[bytes]
        payloads: Iterable[Buffer]
        if self._fn_index is None:
            digests, payloads = repeat(fns[0][0], n), repeat(fns[0][1], n)
        else:
            digests = (fns[fi][0] for fi in self._fn_index[i:j])
            payloads = (fns[fi][1] for fi in self._fn_index[i:j])
        specs = self.specs
        spec_of = repeat(specs[0], n) if self.spec_index is None else \
            map(specs.__getitem__, self.spec_index[i:j])
        frame_at, frames = self._frame_at, self.body
        bufs: Iterable[Sequence[Buffer]] = repeat((), n) if frame_at is None else [
            _take(frames, a, b - a) for a, b in zip(frame_at[i:j], frame_at[i + 1:j + 1])]
        return list(map(Task, self.ids[i:j], spec_of, digests, payloads, datas, bufs))


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


#: integers per task record and per result row
WIDTH = 5
#: result row flags: the outcome is a value (else an error); the row adds an outcome to the
#: result of the row before it (same task)
OK, MORE = 1, 2

#: results of one successful outcome without buffers each (a flood's), as two columns: their
#: task ids, and their pickled values in the same order
Values = tuple[Sequence[int], Sequence[Buffer]]
NO_VALUES: Values = ((), ())


def _take(frames: Sequence[Buffer], index: int, count: int) -> Sequence[Buffer]:
    return list(frames[index:index + count]) if count else ()


def _count(header: dict[str, Any], frames: Sequence[Buffer], what: str) -> int:
    n = header.get("n")
    if not (is_int(n) and n >= 0 and frames):
        raise ProtocolError(f"{what} batch without a record count or blob")
    return n


def _columns(table: list[int]) -> list[list[int]]:
    """The ``WIDTH`` columns of a record table."""
    return [table[i::WIDTH] for i in range(WIDTH)]


def _column_check(column: list[int], low: int, high: float, what: str) -> None:
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


#: a task as its fields in :class:`Task`'s order, a plain tuple (what the front-end's engine
#: makes: a flood's tasks then leave the caller's garbage collector no object each to walk)
TaskRow = tuple[int, Spec, bytes, Buffer, Buffer, Sequence[Buffer]]
#: fields of one task in a flat sequence of rows (:func:`encode_rows`)
ROW = 6


def encode_tasks(tasks: Sequence[Task], kind: str = "tasks") -> Frames:
    """One message for many tasks.

    The header holds a table of the distinct functions (digest, length) and of the distinct
    specifications; each task is a record ``task_id, function, spec, data length, buffers``,
    so a flood of tasks for one function carries the function once.
    """
    return _encode([t.task_id for t in tasks], [t.spec for t in tasks],
                   [t.fn_digest for t in tasks], [t.fn for t in tasks],
                   [t.data for t in tasks], [t.buffers for t in tasks], kind)


def encode_rows(rows: Sequence[Any]) -> Frames:
    """:func:`encode_tasks` for tasks given as :data:`TaskRow` fields one after another in one
    flat sequence (``ROW`` per task: one row, or the front-end's inbox taken as a list)."""
    return _encode(rows[0::ROW], rows[1::ROW], rows[2::ROW], rows[3::ROW], rows[4::ROW],
                   rows[5::ROW], "tasks")


def _encode(ids: Sequence[int], specs: Sequence[Spec], digests: Sequence[bytes],
            fns: Sequence[Buffer], data: Sequence[Buffer], buffers: Sequence[Sequence[Buffer]],
            kind: str) -> Frames:
    """The batch of the tasks given as columns of their fields."""
    fn_index: dict[bytes, int] = {}
    spec_index: dict[Spec, int] = {}
    fn_table: list[list[Any]] = []
    spec_table: list[Any] = []
    head: list[Buffer] = []
    big: list[Buffer] = []
    records: list[int] = []
    last_spec, last_si = None, 0
    for task_id, spec, digest, fn, size, bufs in zip(ids, specs, digests, fns, map(len, data),
                                                     buffers):
        fi = fn_index.get(digest)
        if fi is None:
            fi = fn_index[digest] = len(fn_table)
            fn_table.append([digest.hex(), len(fn)])
            head.append(fn)
        if spec is last_spec:  # a batch's tasks mostly share one Spec: no hash
            si = last_si
        else:
            found = spec_index.get(spec)
            if found is None:
                found = spec_index[spec] = len(spec_table)
                spec_table.append(spec.to_wire())
            si = last_si = found
            last_spec = spec
        records += (task_id, fi, si, size, len(bufs))
        if bufs:
            big.extend(bufs)
    header = {"k": kind, "n": len(ids), "f": fn_table, "s": spec_table}
    return [encode_header(header), b"".join([pack_ints(records), *head, *data]), *big]


def receive_tasks(header: dict[str, Any], frames: Sequence[Buffer],
                  message: Sequence[Any] | None = None) -> Received:
    """Check a ``tasks`` header and its frames (``frames[0]`` is the blob) and read its
    record table, without building a task (what the interchange queues); ``message``: the
    batch's frames as they came, header frame first, kept for sending runs of it on."""
    n = _count(header, frames, "task")
    fn_table, spec_table = header.get("f"), header.get("s")
    if not (isinstance(fn_table, list) and isinstance(spec_table, list)):
        raise ProtocolError("task batch without function or spec tables")
    blob = memoryview(frames[0])
    rec = unpack_ints(blob, WIDTH * n)
    pos = WIDTH * INT_SIZE * n
    fns: list[tuple[bytes, Buffer]] = []
    for entry in fn_table:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
                and is_int(entry[1]) and 0 <= entry[1] <= len(blob) - pos):
            raise ProtocolError(f"malformed function entry {entry!r:.200}")
        try:
            digest = bytes.fromhex(entry[0])
        except ValueError:
            raise ProtocolError(f"function digest {entry[0]!r:.80} is not hex") from None
        fns.append((digest, blob[pos:pos + entry[1]]))
        pos += entry[1]
    try:
        specs = [Spec.from_wire(raw) for raw in spec_table]
    except ResourceSpecError as exc:
        raise ProtocolError(str(exc)) from None
    ids, fis, sis, lens, nbufs = _columns(rec)
    _column_check(fis, 0, len(fns), "function index")
    _column_check(sis, 0, len(specs), "spec index")
    _column_check(lens, 0, len(blob) + 1, "data length")
    _column_check(nbufs, 0, len(frames), "buffer count")
    data_at = list(accumulate(lens, initial=pos))  # where each task's data starts, and the end
    if data_at[-1] != len(blob):
        raise ProtocolError(f"task data of {data_at[-1] - pos} bytes does not fill the "
                            f"{len(blob) - pos} bytes of blob left")
    if 1 + sum(nbufs) != len(frames):
        raise ProtocolError(f"task batch names {sum(nbufs)} buffers; {len(frames) - 1} came")
    # where each task's buffer frames start, where there are any
    frame_at = list(accumulate(nbufs, initial=1)) if sum(nbufs) else None
    return Received(header, frames, ids, fns, fis if len(fns) != 1 else None, specs,
                    sis if len(specs) != 1 else None, blob[WIDTH * INT_SIZE * n:pos], data_at,
                    frame_at, message)


def decode_tasks(header: dict[str, Any], frames: Sequence[Buffer],
                 copy: bool = False) -> list[Task]:
    """Rebuild tasks from a ``tasks`` header and its frames (``frames[0]`` is the blob), as
    :func:`receive_tasks` checks them; payloads are memoryview slices of the blob unless
    ``copy`` (then ``bytes``; tasks of one function share one object)."""
    received = receive_tasks(header, frames)
    return received.tasks(0, received.n, copy)


def task_ids(header: dict[str, Any], frames: Sequence[Buffer]) -> list[int]:
    """Task ids of a task batch from its records alone; [] when even those cannot be read."""
    try:
        n = _count(header, frames, "task")
        return unpack_ints(frames[0], WIDTH * n)[::WIDTH]
    except ProtocolError:
        return []


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
    header = {"k": "results", "n": len(rows) // WIDTH}
    return [encode_header(header), b"".join([pack_ints(rows), *blob]), *big]


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
    header = {"k": "results", "n": sum(rows for rows, _ in parts)}
    return [encode_header(header), b"".join(tables + data), *big]


def _ids(columns: list[list[int]]) -> list[int]:
    """Task ids of result rows' columns: one per result, not per outcome."""
    ids, flags = columns[0], columns[2]
    if max(flags, default=0) & MORE:
        return [tid for tid, f in zip(ids, flags) if not f & MORE]
    return ids


def _rows(header: dict[str, Any], frames: Sequence[Buffer]) -> tuple[list[list[int]], int]:
    """The checked columns of a result batch's rows and where its data starts in the blob."""
    n = _count(header, frames, "result")
    columns = _columns(unpack_ints(frames[0], WIDTH * n))
    start = WIDTH * INT_SIZE * n
    ids, ranks, flags, lens, nbufs = columns
    _column_check(ranks, 0, 2 ** 31, "rank")
    _column_check(flags, 0, (OK | MORE) + 1, "outcome flags")
    _column_check(lens, 0, len(frames[0]) + 1, "result length")
    _column_check(nbufs, 0, len(frames), "buffer count")
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
                          _take(frames, nxt, nbuf) if nbuf else ())
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
    n = _count(header, frames, "result")
    return _ids(_columns(unpack_ints(frames[0], WIDTH * n)))
