"""The header codec shared by every message: one small JSON header frame, then payload frames.

Nothing here imports mpi4py or zmq, and nothing here unpickles.
"""

from __future__ import annotations

import json
import sys
from array import array
from collections.abc import Callable, Sequence
from typing import Any, TypeGuard, TypeVar

from ..errors import ProtocolError

T = TypeVar("T")

Buffer = bytes | bytearray | memoryview
Frames = list[Buffer]


def encode_header(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


MAX_HEADER = 64 * 1024 * 1024

#: the largest message, and message part, a socket of the run takes by default (1 GiB): far
#: above a task or result batch of ordinary size (buffers of 256 KiB and more between the
#: front-end and ranks on its host travel through shared memory instead), and a bound on what
#: one message can make a process allocate
MAX_MESSAGE_SIZE = 1 << 30


def check_max_message_size(value: Any, name: str = "max_message_size") -> int:
    """``value`` when it is a usable message size cap (bytes, at least 1 MiB); else ValueError
    naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 << 20 <= value <= 1 << 62:
        raise ValueError(f"{name}: must be a number of bytes between 1 MiB and 2**62 (default "
                         f"{MAX_MESSAGE_SIZE}, 1 GiB), got {value!r:.40}")
    return value


def message_size(frames: Sequence[Any]) -> int:
    """Bytes in a message's frames (bytes, or anything with the buffer protocol)."""
    return sum(len(f) if isinstance(f, (bytes, bytearray)) else memoryview(f).nbytes
               for f in frames)


def under_cap(items: list[T], encode: Callable[[list[T]], Sequence[Any]],
              cap: int, step: int = 1) -> list[tuple[list[T], Sequence[Any]]]:
    """``items`` encoded as one message, or halves of them while that is over ``cap`` bytes
    (a single item is sent as it is: the sender refused larger ones before); each part with
    its items. ``step``: an item is that many entries of ``items`` (rows given flat)."""
    frames = encode(items)
    if len(items) <= step or message_size(frames) <= cap:
        return [(items, frames)]
    half = len(items) // step // 2 * step
    return under_cap(items[:half], encode, cap, step) + \
        under_cap(items[half:], encode, cap, step)


#: headers of task and result batches of up to this many bytes are kept with what they decode
#: to (at most ``_KEPT`` of them): a flood's batches and a lone task's messages repeat the same
#: few headers (``{"k":"results","n":128}``), and parsing JSON is most of handling a small
#: message. Only batches: their readers never change a header's nested values (its tables),
#: where a control message's fields (lists of task ids) are handed on as they are
_KEPT_AT_MOST = 512
_KEPT = 256
_KEPT_KINDS = (b'{"k":"results",', b'{"k":"tasks",')  # as encode_header writes them
_decoded: dict[bytes, dict[str, Any]] = {}


def decode_header(frame: Buffer) -> dict[str, Any]:
    """Parse and minimally check a header frame; raise :class:`ProtocolError` on garbage.

    A small batch header seen before is not parsed again: its caller gets a copy of what it
    decoded to (the nested tables are shared: read them, never change them)."""
    if len(frame) > _KEPT_AT_MOST:
        return _parse(frame)
    key = bytes(frame)
    if not key.startswith(_KEPT_KINDS):
        return _parse(key)
    body = _decoded.get(key)
    if body is None:
        body = _parse(key)  # raises on garbage: only good headers are kept
        if len(_decoded) >= _KEPT:
            _decoded.clear()
        _decoded[key] = body
    return body.copy()


def _parse(frame: Buffer) -> dict[str, Any]:
    if len(frame) > MAX_HEADER:
        raise ProtocolError(f"header of {len(frame)} bytes is too large")
    try:
        body = json.loads(bytes(frame))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"header is not JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("header is nested too deeply") from None
    if not isinstance(body, dict) or not isinstance(body.get("k"), str):
        raise ProtocolError("header is not an object with a kind")
    return body


def is_int(v: Any) -> TypeGuard[int]:
    """An int that is not a bool (JSON booleans decode as Python bools)."""
    return isinstance(v, int) and not isinstance(v, bool)


#: bytes per integer of a record table (signed, 64-bit, little-endian)
INT_SIZE = 8
_SWAP = sys.byteorder != "little"


def pack_ints(values: list[int]) -> bytes:
    """A record table: signed 64-bit little-endian integers (OverflowError past that range)."""
    table = array("q", values)
    if _SWAP:
        table.byteswap()
    return table.tobytes()


def unpack_ints(frame: Buffer, count: int) -> list[int]:
    """The first ``count`` integers of a record table at the start of ``frame``."""
    size = count * INT_SIZE
    if count < 0 or size > len(frame):
        raise ProtocolError(f"record table of {count} integers runs past its "
                            f"{len(frame)}-byte frame")
    view = memoryview(frame)[:size]
    if not _SWAP and view.format in ("B", "b", "c") and view.contiguous:
        return view.cast("B").cast("q").tolist()
    table = array("q", bytes(view))
    if _SWAP:
        table.byteswap()
    return table.tolist()
