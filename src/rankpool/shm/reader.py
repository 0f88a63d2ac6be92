"""The receiving side of the shared-memory plane (:mod:`.arena`): open the segments that
descriptors name and hand out their buffers, borrowed or copied.

A buffer with one reader is *borrowed*: a result (``READER_FREES``), and a 1-rank task's
argument. The reader marks the segment LENT and returns a writable view of it in place; when
the last view dies (the value unpickled from it, and whatever the caller kept of that), a
finalizer marks it FREE, so that its sender may reuse it. A 64 MB buffer thus costs no copy on
the reading side and no fresh memory to fault in. Every other buffer (an argument every rank of
a multi-rank task reads, since one rank could write into it while another reads) is copied out
into fresh NumPy memory.

A process keeps one :class:`Reader` (:func:`reader`); :func:`resolve` swaps the descriptors
among a message's buffer frames for their buffers, :func:`discard` frees results nobody will
read.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import numpy as np

from ..errors import SharedMemoryError
from ..protocol.wire import Buffer
from .arena import (
    HOST,
    READER_FREES,
    SEGMENT_MAGIC,
    Descriptor,
    is_descriptor,
    parse_descriptor,
)
from .run import FREE, GENERATION_AT, HEADER, IN_USE, LENT, SHM_DIR, STATE_AT


class _Mapping:
    __slots__ = ("fd", "map", "data", "size")

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self.map = mmap.mmap(fd, size)
        self.data = np.frombuffer(self.map, np.uint8)

    def close(self) -> None:
        # the view goes before the map can close; nothing reads it after
        self.data = None  # type: ignore[assignment]
        try:
            self.map.close()
        except BufferError:
            pass
        os.close(self.fd)


#: seconds between the checks of every kept mapping for an unlinked file (a mapping about to be
#: read is checked every time)
PRUNE_EVERY = 0.05


class Reader:
    """Opens segments named by descriptors and hands out their buffers; keeps recent mappings
    open (a mapping made once reads twice as fast as a fresh one), at most ``max_open`` of them,
    and lets go of those whose file was unlinked: the one about to be read at once, the others
    at the next new mapping or within ``PRUNE_EVERY`` seconds."""

    def __init__(self, max_open: int = 32) -> None:
        self.max_open = max_open
        self._maps: OrderedDict[str, _Mapping] = OrderedDict()
        self._lock = threading.Lock()
        self._pruned = 0.0

    def fetch(self, desc: Descriptor, only_reader: bool = False) -> memoryview:
        """The buffer ``desc`` names, writable: borrowed in place when this process is its only
        reader (``READER_FREES``, or ``only_reader``) and nobody borrowed it yet, else a fresh
        copy."""
        with self._lock:
            m = self._open(desc)
            state = _check_current(desc, m)
            view = m.data[desc.offset:desc.offset + desc.length]
            if state == IN_USE and (only_reader or desc.flags & READER_FREES):
                m.map[STATE_AT] = LENT
                weakref.finalize(view, _give_back, m.map, desc.generation, os.getpid())
                return view.data  # the view's memoryview: it keeps the view alive
            out = np.empty(desc.length, np.uint8)
            out[:] = view
        return out.data

    def discard(self, desc: Descriptor) -> None:
        """Free a buffer nobody will read (its task was cancelled or failed); never raises.
        One already borrowed is left to its borrower."""
        if not desc.flags & READER_FREES:
            return
        with self._lock:
            try:
                m = self._open(desc)
                if _check_current(desc, m) == IN_USE:
                    m.map[STATE_AT] = FREE
            except SharedMemoryError:
                return

    def _open(self, desc: Descriptor) -> _Mapping:
        m = self._maps.get(desc.name)
        if m is not None and os.fstat(m.fd).st_nlink == 0:  # unlinked: its name may be reused
            del self._maps[desc.name]
            m.close()
            m = None
        if m is None or time.monotonic() - self._pruned >= PRUNE_EVERY:
            self._prune()
        if m is not None:
            self._maps.move_to_end(desc.name)
            return m
        if desc.host != HOST:
            raise SharedMemoryError(desc.name, f"it was written on host {desc.host!r} and this "
                                               f"process runs on {HOST!r}")
        try:
            fd = os.open(os.path.join(SHM_DIR, desc.name), os.O_RDWR | os.O_NOFOLLOW)
        except OSError as exc:
            raise SharedMemoryError(desc.name, f"it cannot be opened on {HOST} ({exc.strerror}): "
                                               "its owner has exited or it lives on another "
                                               "host") from None
        try:
            st = os.fstat(fd)
            if st.st_uid != os.getuid():  # another user's file under a name of the run
                raise SharedMemoryError(desc.name, f"it belongs to uid {st.st_uid}, not to this "
                                                   f"user (uid {os.getuid()}); not mapped")
            size = st.st_size
            if size < HEADER or desc.offset + desc.length > size:
                raise SharedMemoryError(desc.name, f"the descriptor reaches byte "
                                                   f"{desc.offset + desc.length} of a "
                                                   f"{size}-byte segment")
            m = _Mapping(fd, size)
        except BaseException:
            os.close(fd)
            raise
        if bytes(m.map[:len(SEGMENT_MAGIC)]) != SEGMENT_MAGIC:
            m.close()
            raise SharedMemoryError(desc.name, "the file is not a rankpool segment")
        self._maps[desc.name] = m
        while len(self._maps) > self.max_open:
            self._maps.popitem(last=False)[1].close()
        return m

    def _prune(self) -> None:
        """Drop mappings of unlinked segments: they pin their memory, and a new segment may
        carry the name again."""
        self._pruned = time.monotonic()
        for name, m in list(self._maps.items()):
            if os.fstat(m.fd).st_nlink == 0:
                del self._maps[name]
                m.close()

    def close(self) -> None:
        with self._lock:
            for m in self._maps.values():
                m.close()
            self._maps.clear()


_STATES = {FREE: "FREE", IN_USE: "IN_USE", LENT: "LENT"}


def _check_current(desc: Descriptor, m: _Mapping) -> int:
    """The segment's state when it still holds the buffer ``desc`` names (IN_USE, or LENT: a
    task read again after its rank died reads a copy); else SharedMemoryError."""
    state = m.map[STATE_AT]
    generation = struct.unpack_from("<Q", m.map, GENERATION_AT)[0]
    if state not in (IN_USE, LENT) or generation != desc.generation:
        raise SharedMemoryError(desc.name, f"the buffer was already freed or reused (state "
                                           f"{_STATES.get(state, state)}, generation "
                                           f"{generation}, expected {desc.generation})")
    return state


def _give_back(segment: mmap.mmap, generation: int, borrower: int) -> None:
    """The last view of a borrowed buffer died: its sender may reuse the segment. Not in a
    forked child of the borrower, whose copies of the views say nothing of the parent's."""
    if os.getpid() != borrower:
        return
    try:
        if segment[STATE_AT] == LENT \
                and struct.unpack_from("<Q", segment, GENERATION_AT)[0] == generation:
            segment[STATE_AT] = FREE
    except ValueError:  # the mapping was closed: the segment went with its run
        pass


_reader: Reader | None = None
_reader_lock = threading.Lock()


def reader() -> Reader:
    """This process's reader, made on first use."""
    global _reader
    if _reader is None:
        with _reader_lock:
            if _reader is None:
                _reader = Reader()
    return _reader


def resolve(buffers: Sequence[Buffer], only_reader: bool = False) -> Sequence[Buffer]:
    """``buffers`` with every descriptor replaced by the buffer it names (see
    :meth:`Reader.fetch`)."""
    if not any(is_descriptor(b) for b in buffers):
        return buffers
    return [reader().fetch(parse_descriptor(b), only_reader) if is_descriptor(b) else b
            for b in buffers]


def discard(buffers: Iterable[Buffer]) -> None:
    """Free the reader-freed buffers named among ``buffers`` without reading them; never raises."""
    for b in buffers:
        if is_descriptor(b):
            try:
                desc = parse_descriptor(b)
            except SharedMemoryError:
                continue
            reader().discard(desc)


