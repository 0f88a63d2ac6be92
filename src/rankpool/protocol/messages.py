"""Control messages and version checks. The header codec is :mod:`.wire`; task and result
batches are :mod:`.batches`.

Every message is a list of frames: one JSON header frame, then opaque payload frames. Nothing
here imports mpi4py or zmq, and nothing here unpickles: a payload is bytes routed by its header.
"""

from __future__ import annotations

import sys
from dataclasses import MISSING, dataclass, field, fields
from enum import Enum
from typing import Any, ClassVar, TypeVar

from ..errors import ProtocolError
from .wire import Frames, encode_header, is_int

PROTOCOL_VERSION = 5
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
#: the front-end's send-only socket (lone tasks) has its main socket's identity plus this
SUBMIT_SUFFIX = "/submit"

__all__ = ["PROTOCOL_VERSION", "PYTHON_VERSION", "SUBMIT_SUFFIX", "Message", "Register",
           "Registered", "Heartbeat", "Capacity", "Drain", "Stop", "Command", "Reply", "Lost",
           "LostCause", "Refused", "RefusalCause", "Started", "Cancel", "Cancelled",
           "IDS_PER_MESSAGE", "id_slices", "MESSAGES", "decode_message", "version_mismatch",
           "check_versions"]

# ---------------------------------------------------------------------------------------------
# control messages
M = TypeVar("M", bound="Message")


@dataclass(frozen=True)
class Message:
    """A control message: a header with a kind and typed fields, no payload."""

    KIND: ClassVar[str] = ""

    def encode(self) -> Frames:
        body = {f.name: _plain(getattr(self, f.name)) for f in fields(self)}
        body["k"] = self.KIND
        return [encode_header(body)]

    @classmethod
    def from_header(cls: type[M], header: dict[str, Any]) -> M:
        kwargs = {}
        for f in fields(cls):
            if f.name not in header and f.default_factory is not MISSING:
                continue  # an optional field left out: its default
            if f.name not in header:
                raise ProtocolError(f"{cls.KIND}: missing field {f.name!r}")
            value = header[f.name]
            expected = _FIELD_TYPES.get(str(f.type), None)
            if expected is not None and not expected(value):
                raise ProtocolError(f"{cls.KIND}: field {f.name!r} has bad value {value!r:.100}")
            enum = _ENUM_FIELDS.get(str(f.type))
            if enum is not None:
                try:
                    value = enum(value)
                except ValueError:
                    raise ProtocolError(f"{cls.KIND}: field {f.name!r} has bad value "
                                        f"{value!r:.100}") from None
            kwargs[f.name] = value
        return cls(**kwargs)


def _plain(value: Any) -> Any:
    """A field's value as the header holds it (an enum as its value)."""
    return value.value if isinstance(value, Enum) else value


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _is_int_list(v: Any) -> bool:
    return isinstance(v, list) and all(is_int(x) for x in v)


#: fields whose header value is an enum's value, by annotation
_ENUM_FIELDS: dict[str, type[Enum]] = {}

_FIELD_TYPES = {
    "str": lambda v: isinstance(v, str),
    "int": is_int,
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
    devices: list[str] = field(default_factory=list)  # device of each pool rank ("": none)
    init_error: str = field(default_factory=str)  # why the initializer failed ("": it ran)


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
class Capacity(Message):
    """Pool → interchange: the pool's usable ranks changed, because ranks got stuck in a task
    that never came back (or came back after all), or died.

    ``stuck``: the stuck worker ranks (ranks of the pool); ``node_ranks``: usable worker ranks
    on each host, in host order; ``widest``: the widest task it can still hold (0: none);
    ``lost``: the worker ranks that died; ``retiring``: the pool lost too many, finishes what
    started and leaves (drain it).
    """

    KIND: ClassVar[str] = "capacity"
    stuck: list[int]
    node_ranks: list[int]
    widest: int
    lost: list[int] = field(default_factory=list)
    retiring: bool = field(default_factory=bool)


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


class LostCause(Enum):
    """Why the interchange reports a pool gone (:class:`Lost`); front-ends branch on it."""

    DRAINED = "drained"                    # it finished its tasks and left when drained
    STOPPED = "stopped"                    # it stopped by itself (``reason`` says why)
    REGISTERED_AGAIN = "registered-again"  # a new registration on its connection (restarted)
    NO_HEARTBEAT = "no-heartbeat"          # silent past the heartbeat threshold
    CONNECTION_LOST = "connection-lost"    # a send to it found no connection
    MALFORMED_RESULTS = "malformed-results"  # it sent results that cannot be read
    REFUSED = "refused"                    # its registration was refused (see Refused)
    MALFORMED_TASKS = "malformed-tasks"    # not a pool: the front-end's task batch was refused

    @property
    def had_registered(self) -> bool:
        """Whether the pool had registered: its block did start."""
        return self not in (LostCause.REFUSED, LostCause.MALFORMED_TASKS)


@dataclass(frozen=True)
class Lost(Message):
    """Interchange → front-end: these tasks' pool was lost (or a pool was refused); ``reason``
    is for people, ``cause`` for code."""

    KIND: ClassVar[str] = "lost"
    block_id: str
    hosts: list[str]
    reason: str
    task_ids: list[int]
    cause: LostCause


class RefusalCause(Enum):
    """Why the interchange refused a pool's registration (:class:`Refused`)."""

    VERSION_MISMATCH = "version-mismatch"  # protocol, Python or rankpool version differ
    SHAPE = "shape"                        # its description of itself does not add up
    INIT_FAILED = "init-failed"            # its initializer raised on a worker rank


@dataclass(frozen=True)
class Refused(Message):
    """Interchange → front-end: a pool's registration was refused.

    For a version mismatch ``what`` names what differs and ``ours``/``theirs`` are the
    interchange's and the pool's values; for other refusals ``what`` is empty.
    """

    KIND: ClassVar[str] = "refused"
    block_id: str
    pool_id: str
    hosts: list[str]
    reason: str
    what: str
    ours: str
    theirs: str
    cause: RefusalCause


@dataclass(frozen=True)
class Started(Message):
    """Pool → interchange → front-end: these tasks started on their ranks (their futures
    become RUNNING). Only tasks still running some milliseconds after they started are
    reported: a task that ends first is reported by its result alone."""

    KIND: ClassVar[str] = "started"
    task_ids: list[int]


@dataclass(frozen=True)
class Cancel(Message):
    """Front-end → interchange → pool: drop these tasks if they have not started (their
    futures asked to cancel them). A task a worker rank holds but has not started is dropped
    there. Every task gets an answer: ``Cancelled`` (dropped in the interchange), a
    ``TaskCancelled`` result (dropped in the pool), ``Started``, or its result."""

    KIND: ClassVar[str] = "cancel"
    task_ids: list[int]


@dataclass(frozen=True)
class Cancelled(Message):
    """Interchange → front-end: these tasks were dropped from its queue before any pool had
    them (their cancel succeeded: they never run)."""

    KIND: ClassVar[str] = "cancelled"
    task_ids: list[int]


#: most task ids in one Started, Cancel or Cancelled message (its header stays small)
IDS_PER_MESSAGE = 4096


def id_slices(ids: list[int]) -> list[list[int]]:
    """``ids`` in slices of at most :data:`IDS_PER_MESSAGE`, one per message."""
    return [ids[i:i + IDS_PER_MESSAGE] for i in range(0, len(ids), IDS_PER_MESSAGE)]


_ENUM_FIELDS.update({"LostCause": LostCause, "RefusalCause": RefusalCause})

MESSAGES: dict[str, type[Message]] = {
    m.KIND: m for m in (Register, Registered, Heartbeat, Capacity, Drain, Stop, Command, Reply,
                        Lost, Refused, Started, Cancel, Cancelled)}


def decode_message(header: dict[str, Any]) -> Message:
    cls = MESSAGES.get(header["k"])
    if cls is None:
        raise ProtocolError(f"unknown message kind {header['k']!r:.50}")
    return cls.from_header(header)


def version_mismatch(reg: Register, rankpool_version: str) -> tuple[str, str, str] | None:
    """What differs between a registration and this side: ``(what, ours, theirs)`` or None."""
    pairs = (("protocol version", str(PROTOCOL_VERSION), str(reg.protocol)),
             ("Python version", PYTHON_VERSION, reg.python),
             ("rankpool version", rankpool_version, reg.rankpool))
    for what, ours, theirs in pairs:
        if ours != theirs:
            return what, ours, theirs
    return None


def check_versions(reg: Register, rankpool_version: str) -> str:
    """Compare a registration with this side; return an error message, or "" when compatible."""
    found = version_mismatch(reg, rankpool_version)
    if found is None:
        return ""
    what, ours, theirs = found
    return f"{what} mismatch: interchange has {ours}, pool has {theirs}"
