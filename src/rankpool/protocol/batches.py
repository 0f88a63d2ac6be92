"""Task batches on the wire: a record (:mod:`.records`) per task, ``task_id, function, spec,
data length, buffers``, with the batch's distinct functions and specifications in the header
and the functions' payloads once each, so that a flood of tasks for one function carries the
function once. Results come back as :mod:`.result_batches`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate, repeat
from typing import Any

from ..errors import ProtocolError, ResourceSpecError
from ..task.resources import Spec
from .records import WIDTH, check_column, record_columns, record_count, take_frames
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
            take_frames(frames, a, b - a) for a, b in zip(frame_at[i:j], frame_at[i + 1:j + 1])]
        return list(map(Task, self.ids[i:j], spec_of, digests, payloads, datas, bufs))


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
    fn_index: dict[bytes, int] = {}  # the distinct functions and specs, in order of first use
    spec_index: dict[Spec, int] = {}
    head: list[Buffer] = []  # each distinct function's payload
    big: list[Buffer] = []
    records: list[int] = []
    last_spec, last_si = None, 0
    for task_id, spec, digest, fn, size, bufs in zip(ids, specs, digests, fns, map(len, data),
                                                     buffers):
        fi = fn_index.get(digest)
        if fi is None:
            fi = fn_index[digest] = len(head)
            head.append(fn)
        if spec is last_spec:  # a batch's tasks mostly share one Spec: no hash
            si = last_si
        else:
            found = spec_index.get(spec)
            if found is None:
                found = spec_index[spec] = len(spec_index)
            si = last_si = found
            last_spec = spec
        records += (task_id, fi, si, size, len(bufs))
        if bufs:
            big.extend(bufs)
    if len(head) == 1 and len(spec_index) == 1:  # the common case: the header repeats
        header = _one_of_each(kind, len(ids), digest, len(fn), spec)  # every task's
    else:
        header = encode_header({"k": kind, "n": len(ids),
                                "f": [[d.hex(), len(f)] for d, f in zip(fn_index, head)],
                                "s": [s.to_wire() for s in spec_index]})
    return [header, b"".join([pack_ints(records), *head, *data]), *big]


@lru_cache(maxsize=256)
def _one_of_each(kind: str, n: int, digest: bytes, fn_size: int, spec: Spec) -> bytes:
    """The header of ``n`` tasks of one function and one specification."""
    return encode_header({"k": kind, "n": n, "f": [[digest.hex(), fn_size]],
                          "s": [spec.to_wire()]})


def receive_tasks(header: dict[str, Any], frames: Sequence[Buffer],
                  message: Sequence[Any] | None = None) -> Received:
    """Check a ``tasks`` header and its frames (``frames[0]`` is the blob) and read its
    record table, without building a task (what the interchange queues); ``message``: the
    batch's frames as they came, header frame first, kept for sending runs of it on."""
    n = record_count(header, frames, "task")
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
    ids, fis, sis, lens, nbufs = record_columns(rec)
    check_column(fis, 0, len(fns), "function index")
    check_column(sis, 0, len(specs), "spec index")
    check_column(lens, 0, len(blob) + 1, "data length")
    check_column(nbufs, 0, len(frames), "buffer count")
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
        n = record_count(header, frames, "task")
        return unpack_ints(frames[0], WIDTH * n)[::WIDTH]
    except ProtocolError:
        return []


