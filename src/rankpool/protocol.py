"""The wire protocol: message types, the header codec and version checks.

Every message is a list of frames: one JSON header frame, then opaque payload frames. Nothing
here imports mpi4py or zmq, and nothing here unpickles: a payload is bytes routed by its header.

Tasks and results travel in *batches* so that a flood of small tasks costs few frames::

    [header, blob, big_buffer_1, big_buffer_2, ...]

The header lists one record per task (or result) with the lengths of its pieces; ``blob`` is
the concatenation of every record's small pieces in order; buffers of at least
``serialize.OOB_THRESHOLD`` bytes follow as frames of their own, in record order.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from .errors import ProtocolError, ResourceSpecError
from .resources import Spec

PROTOCOL_VERSION = 1
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"

Buffer = bytes | bytearray | memoryview
Frames = list[Buffer]


# ---------------------------------------------------------------------------------------------
# tasks and results
@dataclass(slots=True)
class Task:
    """One task: what to run (a function digest and payload) and its arguments."""

    task_id: int
    spec: Spec
    fn_digest: bytes
    fn: Buffer
    data: Buffer
    buffers: list[Buffer] = field(default_factory=list)


@dataclass(slots=True)
class Outcome:
    """What one rank of a task produced: a pickled value (``ok``) or a pickled error."""

    rank: int
    ok: bool
    data: Buffer
    buffers: list[Buffer] = field(default_factory=list)


@dataclass(slots=True)
class Result:
    """A finished task.

    ``outcomes`` holds the root's value for a successful ``results="root"`` task, every rank's
    value in rank order for ``results="all"``, and every failing rank's error otherwise.
    ``info`` is ``[host, [pool ranks], start, end]`` where the pool knows it, else ``[]``.
    """

    task_id: int
    outcomes: list[Outcome]
    info: list[Any] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)


def _take(frames: Sequence[Buffer], index: int, count: int) -> list[Buffer]:
    if count < 0 or index + count > len(frames):
        raise ProtocolError(f"batch names {count} buffers at frame {index}; only {len(frames)} frames")
    return list(frames[index:index + count])


def encode_tasks(tasks: Sequence[Task], kind: str = "tasks") -> Frames:
    records = []
    blob: list[Buffer] = []
    big: list[Buffer] = []
    for t in tasks:
        records.append([t.task_id, t.fn_digest.hex(), len(t.fn), len(t.data), len(t.buffers),
                        t.spec.to_wire()])
        blob.append(t.fn)
        blob.append(t.data)
        big.extend(t.buffers)
    return [encode_header({"k": kind, "r": records}), b"".join(blob), *big]


def decode_tasks(header: dict[str, Any], frames: Sequence[Buffer]) -> list[Task]:
    """Rebuild tasks from a ``tasks`` header and its frames (``frames[0]`` is the blob)."""
    records = header.get("r")
    if not isinstance(records, list) or not frames:
        raise ProtocolError("task batch without records or blob")
    blob = memoryview(frames[0])
    pos, nxt = 0, 1
    tasks = []
    for rec in records:
        if not (isinstance(rec, list) and len(rec) == 6 and _is_int(rec[0]) and isinstance(rec[1], str)
                and _is_int(rec[2]) and _is_int(rec[3]) and _is_int(rec[4])):
            raise ProtocolError(f"malformed task record {rec!r:.200}")
        tid, digest, fn_len, data_len, nbuf, spec = rec
        if fn_len < 0 or data_len < 0 or pos + fn_len + data_len > len(blob):
            raise ProtocolError(f"task {tid}: lengths run past the blob")
        try:
            parsed = Spec.from_wire(spec)
            fn_digest = bytes.fromhex(digest)
        except (ResourceSpecError, ValueError) as exc:
            raise ProtocolError(f"task {tid}: {exc}") from None
        fn = blob[pos:pos + fn_len]
        data = blob[pos + fn_len:pos + fn_len + data_len]
        pos += fn_len + data_len
        tasks.append(Task(tid, parsed, fn_digest, fn, data, _take(frames, nxt, nbuf)))
        nxt += nbuf
    return tasks


def encode_results(results: Sequence[Result]) -> Frames:
    records = []
    blob: list[Buffer] = []
    big: list[Buffer] = []
    for r in results:
        outs = []
        for o in r.outcomes:
            outs.append([o.rank, o.ok, len(o.data), len(o.buffers)])
            blob.append(o.data)
            big.extend(o.buffers)
        records.append([r.task_id, outs, r.info])
    return [encode_header({"k": "results", "r": records}), b"".join(blob), *big]


def decode_results(header: dict[str, Any], frames: Sequence[Buffer]) -> list[Result]:
    records = header.get("r")
    if not isinstance(records, list) or not frames:
        raise ProtocolError("result batch without records or blob")
    blob = memoryview(frames[0])
    pos, nxt = 0, 1
    results = []
    for rec in records:
        if not (isinstance(rec, list) and len(rec) == 3 and _is_int(rec[0])
                and isinstance(rec[1], list) and isinstance(rec[2], list)):
            raise ProtocolError(f"malformed result record {rec!r:.200}")
        outs = []
        for o in rec[1]:
            if not (isinstance(o, list) and len(o) == 4 and _is_int(o[0]) and isinstance(o[1], bool)
                    and _is_int(o[2]) and _is_int(o[3]) and 0 <= o[2] <= len(blob) - pos):
                raise ProtocolError(f"malformed outcome {o!r:.200} of task {rec[0]}")
            outs.append(Outcome(o[0], o[1], blob[pos:pos + o[2]], _take(frames, nxt, o[3])))
            pos += o[2]
            nxt += o[3]
        results.append(Result(rec[0], outs, rec[2]))
    return results


def result_ids(header: dict[str, Any]) -> list[int]:
    """Task ids of a result batch, read from the header alone (the interchange's view)."""
    try:
        return [int(rec[0]) for rec in header["r"]]
    except (KeyError, TypeError, ValueError, IndexError):
        raise ProtocolError("malformed result batch header") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# ---------------------------------------------------------------------------------------------
# control messages
@dataclass(frozen=True)
class Message:
    """A control message: a header with a kind and typed fields, no payload."""

    KIND: ClassVar[str] = ""

    def encode(self) -> Frames:
        body = {f.name: getattr(self, f.name) for f in fields(self)}
        body["k"] = self.KIND
        return [encode_header(body)]

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> Message:
        kwargs = {}
        for f in fields(cls):
            if f.name not in header:
                raise ProtocolError(f"{cls.KIND}: missing field {f.name!r}")
            value = header[f.name]
            expected = _FIELD_TYPES.get(str(f.type), None)
            if expected is not None and not expected(value):
                raise ProtocolError(f"{cls.KIND}: field {f.name!r} has bad value {value!r:.100}")
            kwargs[f.name] = value
        return cls(**kwargs)


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _is_int_list(v: Any) -> bool:
    return isinstance(v, list) and all(_is_int(x) for x in v)


_FIELD_TYPES = {
    "str": lambda v: isinstance(v, str),
    "int": _is_int,
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "list[str]": _is_str_list,
    "list[int]": _is_int_list,
}


@dataclass(frozen=True)
class Register(Message):
    """Pool → interchange, first message on its connection."""

    KIND: ClassVar[str] = "register"
    protocol: int
    rankpool: str
    python: str
    block_id: str
    pool_id: str
    hosts: list[str]
    node_ranks: list[int]        # worker ranks on each host, in host order
    widest: int                  # widest task it can hold (its worker ranks)
    ranks_per_node: int


@dataclass(frozen=True)
class Registered(Message):
    """Interchange → pool: accepted (``error`` empty) or refused (``error`` says why)."""

    KIND: ClassVar[str] = "registered"
    error: str
    heartbeat_period: float
    heartbeat_threshold: float


@dataclass(frozen=True)
class Heartbeat(Message):
    KIND: ClassVar[str] = "heartbeat"


@dataclass(frozen=True)
class Drain(Message):
    """Interchange → pool: take no more tasks, finish the running ones, then exit."""

    KIND: ClassVar[str] = "drain"


@dataclass(frozen=True)
class Stop(Message):
    """Stop at once: interchange → pool, or pool → interchange when it leaves."""

    KIND: ClassVar[str] = "stop"
    reason: str


@dataclass(frozen=True)
class Command(Message):
    """Front-end → interchange: a request answered by a :class:`Reply`."""

    KIND: ClassVar[str] = "command"
    name: str
    arg: str


@dataclass(frozen=True)
class Reply(Message):
    KIND: ClassVar[str] = "reply"
    name: str
    value: Any
    error: str


@dataclass(frozen=True)
class Lost(Message):
    """Interchange → front-end: these tasks' pool was lost (or a pool was refused)."""

    KIND: ClassVar[str] = "lost"
    block_id: str
    hosts: list[str]
    reason: str
    task_ids: list[int]


MESSAGES: dict[str, type[Message]] = {
    m.KIND: m for m in (Register, Registered, Heartbeat, Drain, Stop, Command, Reply, Lost)}


def encode_header(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


MAX_HEADER = 64 * 1024 * 1024


def decode_header(frame: Buffer) -> dict[str, Any]:
    """Parse and minimally check a header frame; raise :class:`ProtocolError` on garbage."""
    if len(frame) > MAX_HEADER:
        raise ProtocolError(f"header of {len(frame)} bytes is too large")
    try:
        body = json.loads(bytes(frame))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"header is not JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("k"), str):
        raise ProtocolError("header is not an object with a kind")
    return body


def decode_message(header: dict[str, Any]) -> Message:
    cls = MESSAGES.get(header["k"])
    if cls is None:
        raise ProtocolError(f"unknown message kind {header['k']!r:.50}")
    return cls.from_header(header)


def check_versions(reg: Register, rankpool_version: str) -> str:
    """Compare a registration with this side; return an error message, or "" when compatible."""
    pairs = (("protocol version", str(PROTOCOL_VERSION), str(reg.protocol)),
             ("Python version", PYTHON_VERSION, reg.python),
             ("rankpool version", rankpool_version, reg.rankpool))
    for what, ours, theirs in pairs:
        if ours != theirs:
            return f"{what} mismatch: interchange has {ours}, pool has {theirs}"
    return ""
