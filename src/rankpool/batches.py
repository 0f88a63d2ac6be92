"""Tasks and results on the wire, in batches, so that a flood of small tasks costs few frames::

    [header, blob, big_buffer_1, big_buffer_2, ...]

The header lists one record per task (or result) with the lengths of its pieces; ``blob`` is
the concatenation of every record's small pieces in order; buffers of at least
``serialize.OOB_THRESHOLD`` bytes follow as frames of their own, in record order. Nothing
here unpickles: payloads are bytes routed by their header.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ProtocolError, ResourceSpecError
from .resources import Spec
from .wire import Buffer, Frames, encode_header, is_int

@dataclass(slots=True)
class Task:
    """One task: what to run (a function digest and payload) and its arguments."""

    task_id: int
    spec: Spec
    fn_digest: bytes
    fn: Buffer
    data: Buffer
    buffers: Sequence[Buffer] = ()


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


def _take(frames: Sequence[Buffer], index: int, count: int) -> Sequence[Buffer]:
    if count < 0 or index + count > len(frames):
        raise ProtocolError(f"batch names {count} buffers at frame {index}; only {len(frames)} frames")
    return list(frames[index:index + count]) if count else ()


def encode_tasks(tasks: Sequence[Task], kind: str = "tasks") -> Frames:
    """One message for many tasks.

    The header holds a table of the distinct functions (digest, length) and of the distinct
    specifications, then one record ``[task_id, function, spec, data length, buffers]`` per
    task, so a flood of tasks for one function carries the function once.
    """
    fn_index: dict[bytes, int] = {}
    spec_index: dict[Spec, int] = {}
    fn_table: list[list[Any]] = []
    spec_table: list[Any] = []
    head: list[Buffer] = []
    data: list[Buffer] = []
    big: list[Buffer] = []
    records = []
    for t in tasks:
        fi = fn_index.get(t.fn_digest)
        if fi is None:
            fi = fn_index[t.fn_digest] = len(fn_table)
            fn_table.append([t.fn_digest.hex(), len(t.fn)])
            head.append(t.fn)
        si = spec_index.get(t.spec)
        if si is None:
            si = spec_index[t.spec] = len(spec_table)
            spec_table.append(t.spec.to_wire())
        records.append([t.task_id, fi, si, len(t.data), len(t.buffers)])
        data.append(t.data)
        if t.buffers:
            big.extend(t.buffers)
    header = {"k": kind, "f": fn_table, "s": spec_table, "r": records}
    return [encode_header(header), b"".join(head + data), *big]


def decode_tasks(header: dict[str, Any], frames: Sequence[Buffer],
                 copy: bool = False) -> list[Task]:
    """Rebuild tasks from a ``tasks`` header and its frames (``frames[0]`` is the blob).

    Payloads are memoryview slices of the blob unless ``copy`` (then ``bytes``; tasks of one
    function share one object).
    """
    records, fn_table, spec_table = header.get("r"), header.get("f"), header.get("s")
    if not (isinstance(records, list) and isinstance(fn_table, list)
            and isinstance(spec_table, list) and frames):
        raise ProtocolError("task batch without records, tables or blob")
    blob = memoryview(frames[0])
    pos = 0
    fns: list[tuple[bytes, Buffer]] = []
    for entry in fn_table:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
                and is_int(entry[1]) and 0 <= entry[1] <= len(blob) - pos):
            raise ProtocolError(f"malformed function entry {entry!r:.200}")
        try:
            digest = bytes.fromhex(entry[0])
        except ValueError:
            raise ProtocolError(f"function digest {entry[0]!r:.80} is not hex") from None
        piece = blob[pos:pos + entry[1]]
        fns.append((digest, bytes(piece) if copy else piece))
        pos += entry[1]
    try:
        specs = [Spec.from_wire(raw) for raw in spec_table]
    except ResourceSpecError as exc:
        raise ProtocolError(str(exc)) from None
    nfn, nspec, end = len(fns), len(specs), len(blob)
    nxt = 1
    tasks = []
    for rec in records:
        if not (type(rec) is list and len(rec) == 5 and type(rec[0]) is int
                and type(rec[1]) is int and 0 <= rec[1] < nfn and type(rec[2]) is int
                and 0 <= rec[2] < nspec and type(rec[3]) is int and 0 <= rec[3] <= end - pos
                and type(rec[4]) is int):
            raise ProtocolError(f"malformed task record {rec!r:.200}")
        tid, fi, si, data_len, nbuf = rec
        digest, fn = fns[fi]
        data = blob[pos:pos + data_len]
        pos += data_len
        tasks.append(Task(tid, specs[si], digest, fn, bytes(data) if copy else data,
                          _take(frames, nxt, nbuf) if nbuf else ()))
        nxt += nbuf
    if nxt != len(frames):
        raise ProtocolError(f"task batch has {len(frames) - nxt} frames its records do not name")
    return tasks


def encode_results(results: Sequence[Result]) -> Frames:
    """One message for many results.

    A record is ``[task_id, length]`` for the common case (one successful outcome of rank 0
    without out-of-band buffers) and ``[task_id, [[rank, ok, length, buffers], ...]]`` otherwise.
    """
    records: list[list[Any]] = []
    blob: list[Buffer] = []
    big: list[Buffer] = []
    for r in results:
        outs = r.outcomes
        if len(outs) == 1 and outs[0].ok and outs[0].rank == 0 and not outs[0].buffers:
            records.append([r.task_id, len(outs[0].data)])
            blob.append(outs[0].data)
            continue
        full = []
        for o in outs:
            full.append([o.rank, o.ok, len(o.data), len(o.buffers)])
            blob.append(o.data)
            big.extend(o.buffers)
        records.append([r.task_id, full])
    return [encode_header({"k": "results", "r": records}), b"".join(blob), *big]


def _outcome_ok(o: Any, room: int) -> bool:
    return (type(o) is list and len(o) == 4 and type(o[0]) is int and type(o[1]) is bool
            and type(o[2]) is int and type(o[3]) is int and 0 <= o[2] <= room and o[3] >= 0)


def _record_outcomes(rec: Any, room: int) -> int | list[list[Any]]:
    """Check one result record against ``room`` bytes of blob left; return its outcomes field."""
    if not (type(rec) is list and len(rec) == 2 and type(rec[0]) is int):
        raise ProtocolError(f"malformed result record {rec!r:.200}")
    outs = rec[1]
    if type(outs) is int:
        if not 0 <= outs <= room:
            raise ProtocolError(f"result of task {rec[0]} runs past the blob")
        return outs
    if type(outs) is not list or not outs:
        raise ProtocolError(f"malformed outcomes of task {rec[0]}")
    for o in outs:
        if not _outcome_ok(o, room):
            raise ProtocolError(f"malformed outcome {o!r:.200} of task {rec[0]}")
        room -= o[2]
    return outs


def _records(header: dict[str, Any], frames: Sequence[Any]) -> list[Any]:
    records = header.get("r")
    if not isinstance(records, list) or not frames:
        raise ProtocolError("result batch without records or blob")
    return records


def decode_results(header: dict[str, Any], frames: Sequence[Buffer]) -> list[Result]:
    records = _records(header, frames)
    blob = memoryview(frames[0])
    end = len(blob)
    pos, nxt = 0, 1
    results = []
    for rec in records:
        outs = _record_outcomes(rec, end - pos)
        if type(outs) is int:
            results.append(Result(rec[0], [Outcome(0, True, blob[pos:pos + outs])]))
            pos += outs
            continue
        parsed = []
        for o in outs:
            parsed.append(Outcome(o[0], o[1], blob[pos:pos + o[2]], _take(frames, nxt, o[3])))
            pos += o[2]
            nxt += o[3]
        results.append(Result(rec[0], parsed))
    if nxt != len(frames):
        raise ProtocolError(f"result batch has {len(frames) - nxt} frames its records do not name")
    return results


def check_results(header: dict[str, Any], frames: Sequence[Any]) -> None:
    """Check that a result batch is one :func:`decode_results` accepts, without slicing it.

    The interchange uses it so a batch the front-end could not read is failed rather than
    forwarded; it applies the same rules but builds no outcomes.
    """
    records = _records(header, frames)
    room = len(frames[0])
    named = 0
    for rec in records:
        outs = _record_outcomes(rec, room)
        if type(outs) is int:
            room -= outs
            continue
        for o in outs:
            room -= o[2]
            named += o[3]
    if named != len(frames) - 1:
        raise ProtocolError(f"result batch names {named} buffers; {len(frames) - 1} came")


def result_ids(header: dict[str, Any]) -> list[int]:
    """Task ids of a result batch, read from the header alone (the interchange's view)."""
    try:
        ids = [rec[0] for rec in header["r"]]
    except (KeyError, TypeError, IndexError):
        raise ProtocolError("malformed result batch header") from None
    if not all(type(i) is int for i in ids):
        raise ProtocolError("result batch with non-integer task ids")
    return ids
