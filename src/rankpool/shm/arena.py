"""A same-host shared-memory plane for large out-of-band buffers.

Every ZeroMQ or MPI hop of a large buffer lands it in freshly allocated memory, and on Linux
the page faults of fresh memory cost about as much as copying the bytes. Between processes of
one host a buffer therefore travels cheaper through a segment in ``/dev/shm`` whose pages were
faulted once and are reused: the sender copies the buffer into a free segment of its
:class:`Arena` and sends a *descriptor* (a frame of a few dozen bytes) where the buffer's frame
would have gone; the receiver copies it out of the segment into fresh ``np.empty`` memory,
which NumPy backs with transparent huge pages, so that both copies run at memory speed. A
receiver that is a buffer's only reader skips its copy: it *borrows* the buffer, reading it in
place for as long as any view of it lives.

Segments are files ``/dev/shm/<prefix>-<pid>-<n>`` (mode 0600) holding one buffer each behind a
small header::

    0   8 bytes  segment magic
    8   1 byte   state: FREE, IN_USE or LENT
    16  8 bytes  generation (bumped at every use, little-endian)
    24  8 bytes  capacity in bytes
    64           data

A descriptor frame is ``DESCRIPTOR_MAGIC`` followed by offset, length, generation, flags, host
and segment name. Real out-of-band buffers are at least ``serialize.OOB_THRESHOLD`` bytes, so a
shorter frame that starts with the magic is a descriptor and no message header changes.

Ownership: the sender sets IN_USE before sending a descriptor; whoever frees sets FREE, exactly
one party per segment. With the ``READER_FREES`` flag (results: one reader) the receiver frees;
without it (task arguments, read by every rank of a task and possibly still needed until the
task ends) the sender frees when the task has ended. A borrowing receiver sets LENT before it
hands out a view and FREE when the last view dies (:mod:`.reader`); the sender's own freeing
leaves a LENT segment alone, so a task that keeps its argument keeps it intact, and the sender
places later buffers elsewhere. The sender only reuses segments it sees FREE, picks the smallest
that fits among the few it looks at, creates new ones as needed and, past its cap, returns the
buffer to be sent as an ordinary frame: nothing waits for space.

A flood can hold thousands of segments in flight, and only reading a segment's state says
whether its reader freed it, so placing a buffer looks at a bounded number of segments, the
least recently taken or looked at first (a segment found still in use goes to the back), and
the sweep of free segments beyond ``keep`` runs at most every ``TRIM_EVERY`` seconds while
buffers are placed and released: both stay O(1) per buffer whatever is in flight.

This module is the descriptor format and the sending side; the receiving side is
:mod:`.reader`, run prefixes, the probe and the sweep of a run's leftovers are in
:mod:`.run` (no NumPy: the interchange uses them). Nothing here imports mpi4py or zmq.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import mmap
import os
import re
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import SharedMemoryError
from ..protocol.wire import Buffer
from .run import (
    CAPACITY_AT,
    FREE,
    GENERATION_AT,
    HEADER,
    IN_USE,
    LENT,
    SHM_DIR,
    STATE_AT,
    check_run_prefix,
)

log = logging.getLogger(__name__)

#: buffers at least this large go through shared memory (smaller ones: ordinary frames)
THRESHOLD = 256 * 1024
#: default bytes of segments one process may hold
DEFAULT_CAP = 4 * 1024 ** 3
#: bytes of free segments one process keeps for reuse; beyond, the least recently used go
KEEP = 256 * 1024 * 1024
#: a new segment may take at most this fraction of the free space of /dev/shm
FREE_SPACE_FRACTION = 0.5
#: segment sizes are rounded up to this, so that similar buffers share segments
GRANULE = 1024 * 1024
#: segments that could hold a buffer whose state a placement reads, at most (and segments it
#: passes over, at most): the least recently taken or looked at first
PROBE, LOOK = 16, 64
#: seconds between the sweeps of free segments beyond ``keep`` that placing and releasing
#: buffers start (:meth:`Arena.trim` itself always sweeps)
TRIM_EVERY = 0.05

SEGMENT_MAGIC = b"RPSEG\x00\x00\x01"
DESCRIPTOR_MAGIC = b"\x00RPSHM1\x00"
#: descriptor flag: the receiver frees the buffer (after its copy, or when its views die)
READER_FREES = 1

_FIXED = struct.Struct("<QQQB")   # offset, length, generation, flags
_NAME_RE = re.compile(r"rankpool-[A-Za-z0-9]+(-[0-9]+-[0-9]+|\.host)")
#: descriptors are far shorter than this (and than any out-of-band buffer)
MAX_DESCRIPTOR = 1024

HOST = socket.gethostname()
#: segment numbers, unique in this process whatever arena takes them (names are never reused)
_serial = itertools.count(1)


# -- descriptors ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Descriptor:
    """Where one buffer lies: host, segment, offset, length, and the segment's generation."""

    host: str
    name: str
    offset: int
    length: int
    generation: int
    flags: int

    def encode(self) -> bytes:
        host, name = self.host.encode(), self.name.encode()
        return b"".join((DESCRIPTOR_MAGIC, _FIXED.pack(self.offset, self.length, self.generation,
                                                       self.flags),
                         bytes((len(host),)), host, bytes((len(name),)), name))

    def describe(self) -> str:
        return f"shared-memory buffer {self.name} ({self.length} bytes, written on {self.host})"


def is_descriptor(frame: Buffer) -> bool:
    """Whether a buffer frame is a descriptor (short, with the magic) rather than data."""
    return len(frame) < MAX_DESCRIPTOR and bytes(frame[:len(DESCRIPTOR_MAGIC)]) == DESCRIPTOR_MAGIC


def parse_descriptor(frame: Buffer) -> Descriptor:
    """Decode a descriptor frame; :class:`SharedMemoryError` says what is wrong with a bad one."""
    raw = bytes(frame)
    if not raw.startswith(DESCRIPTOR_MAGIC) or len(raw) >= MAX_DESCRIPTOR:
        raise SharedMemoryError("?", "the frame is not a shared-memory descriptor")
    pos = len(DESCRIPTOR_MAGIC)
    try:
        offset, length, generation, flags = _FIXED.unpack_from(raw, pos)
        pos += _FIXED.size
        host_len = raw[pos]
        host = raw[pos + 1:pos + 1 + host_len].decode()
        pos += 1 + host_len
        name_len = raw[pos]
        name = raw[pos + 1:pos + 1 + name_len].decode()
        pos += 1 + name_len
    except (struct.error, IndexError, UnicodeDecodeError):
        raise SharedMemoryError("?", f"truncated or garbled descriptor of {len(raw)} bytes") \
            from None
    if pos != len(raw):
        raise SharedMemoryError(name or "?", f"a descriptor of {len(raw)} bytes whose fields "
                                             f"take {pos}: truncated or padded")
    if not _NAME_RE.fullmatch(name) or name.endswith(".host"):
        raise SharedMemoryError(name or "?", "the descriptor names no rankpool segment")
    if offset < HEADER:
        raise SharedMemoryError(name, f"offset {offset} lies inside the segment header")
    return Descriptor(host, name, offset, length, generation, flags)


# -- the sender's arena --------------------------------------------------------------------------
class _Segment:
    """One segment of an arena: its file, its mapping, and its data as a NumPy byte array."""

    __slots__ = ("name", "path", "capacity", "map", "data", "generation", "used")

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.path = os.path.join(SHM_DIR, name)
        self.capacity = capacity
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW, 0o600)
        try:
            # reserve the pages now: a full /dev/shm is an OSError here, not a SIGBUS later
            os.posix_fallocate(fd, 0, HEADER + capacity)
            self.map = mmap.mmap(fd, HEADER + capacity)
        except BaseException:
            os.close(fd)
            os.unlink(self.path)
            raise
        os.close(fd)
        self.map[:len(SEGMENT_MAGIC)] = SEGMENT_MAGIC
        struct.pack_into("<Q", self.map, CAPACITY_AT, capacity)
        self.data = np.frombuffer(self.map, np.uint8, capacity, HEADER)
        self.generation = 0
        self.used = 0          # when it last took a buffer, in the arena's count of uses

    @property
    def free(self) -> bool:
        return self.map[STATE_AT] == FREE

    def unlink(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        # the view goes before the map can close; nothing reads it after
        self.data = None  # type: ignore[assignment]
        try:
            self.map.close()
        except BufferError:  # a view of it is still alive somewhere: unmapped when it dies
            pass


#: what the sender keeps of one buffer it placed: the segment and the generation it wrote
Slot = tuple[_Segment, int]


class Arena:
    """One process's segments for the buffers it sends; thread-safe.

    ``prefix``: the run prefix (segment names are ``<prefix>-<pid>-<n>``); ``cap``: most bytes
    of segments held at once; ``keep``: most bytes of free segments kept for reuse (free
    segments hold their memory, so a one-off huge buffer must not pin it for good; see
    :meth:`trim`); ``threshold``: smallest buffer placed in a segment.
    """

    def __init__(self, prefix: str, *, cap: int = DEFAULT_CAP, keep: int = KEEP,
                 threshold: int = THRESHOLD) -> None:
        check_run_prefix(prefix)
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
            raise ValueError(f"shared_memory_cap must be a non-negative number of bytes, "
                             f"got {cap!r}")
        self.prefix = prefix
        self.cap = cap
        self.keep = keep
        self.threshold = threshold
        self.uses = 0
        self.pid = os.getpid()
        #: every segment, the least recently taken or looked at first
        self._order: OrderedDict[_Segment, None] = OrderedDict()
        self.held = 0
        self.fallbacks = 0     # buffers sent as frames because no segment could hold them
        self._lock = threading.Lock()
        self._closed = False
        self._trimmed = 0.0    # when the last sweep ran (monotonic)
        atexit.register(self.close, 0.0)

    @property
    def segments(self) -> list[_Segment]:
        """Every segment, as a list made at once (other threads may place meanwhile)."""
        return list(self._order)

    def publish(self, buffers: Sequence[Buffer],
                reader_frees: bool) -> tuple[list[Buffer], list[Slot]]:
        """Place the buffers of at least ``threshold`` bytes in segments.

        Returns the frames to send (descriptors in place of the placed buffers, the others
        unchanged) and the slots taken, which :meth:`release` frees when not ``reader_frees``.
        """
        frames: list[Buffer] = list(buffers)
        slots: list[Slot] = []
        flags = READER_FREES if reader_frees else 0
        for i, buf in enumerate(buffers):
            n = memoryview(buf).nbytes
            if n < self.threshold:
                continue
            with self._lock:
                seg = None if self._closed else self._take(n)
                if seg is None:
                    self.fallbacks += 1
                    continue
                seg.generation += 1
                self.uses += 1
                seg.used = self.uses
                struct.pack_into("<Q", seg.map, GENERATION_AT, seg.generation)
                seg.map[STATE_AT] = IN_USE
            seg.data[:n] = np.frombuffer(buf, np.uint8)
            frames[i] = Descriptor(HOST, seg.name, HEADER, n, seg.generation, flags).encode()
            slots.append((seg, seg.generation))
        if slots:
            self._trim_soon()
        return frames, slots

    def release(self, slots: Iterable[Slot]) -> None:
        """Free slots this process owns the freeing of (buffers sent without ``reader_frees``),
        except those their reader borrowed: it frees them when its views die."""
        for seg, generation in slots:
            if seg.generation == generation and seg.data is not None \
                    and seg.map[STATE_AT] != LENT:
                seg.map[STATE_AT] = FREE
        self._trim_soon()

    def _trim_soon(self) -> None:
        """:meth:`trim`, unless a sweep ran in the last ``TRIM_EVERY`` seconds."""
        if self.held > self.keep and time.monotonic() - self._trimmed >= TRIM_EVERY:
            self.trim()

    def trim(self) -> None:
        """Unlink the least recently used free segments beyond ``keep`` bytes.

        Started by placements and releases (at most every ``TRIM_EVERY`` seconds); a process
        that places buffers seldom (a worker rank between results) calls it when it has
        time."""
        if self.held <= self.keep:  # free segments are part of what is held: all may stay
            return
        with self._lock:
            self._trimmed = time.monotonic()
            free = sorted((s for s in self._order if s.free), key=lambda s: -s.used)
            kept = 0
            for seg in free:
                if kept + seg.capacity <= self.keep:
                    kept += seg.capacity
                else:
                    self._drop(seg)

    def _take(self, n: int) -> _Segment | None:
        """The smallest free segment that holds ``n`` bytes without hoarding a far larger one
        among the first ``PROBE`` that could (and ``LOOK`` in all), else a new one; None past
        the cap or when ``/dev/shm`` has no room."""
        best = None
        busy = []
        largest = max(4 * n, n + GRANULE)
        probed = 0
        order = self._order
        for looked, seg in enumerate(order, 1):
            if n <= seg.capacity <= largest:
                if seg.free:
                    if best is None or seg.capacity < best.capacity:
                        best = seg
                else:
                    busy.append(seg)
                probed += 1
            if probed >= PROBE or looked >= LOOK:
                break
        for seg in busy:  # still read: look at the others first next time
            order.move_to_end(seg)
        if best is not None:
            order.move_to_end(best)
            return best
        capacity = -(-n // GRANULE) * GRANULE
        if not self._make_room(capacity):
            return None
        name = f"{self.prefix}-{self.pid}-{next(_serial)}"
        try:
            seg = _Segment(name, capacity)
        except OSError as exc:
            log.warning("cannot create shared-memory segment %s of %d bytes (%s); sending "
                        "the buffer as a message frame", name, capacity, exc)
            return None
        self._order[seg] = None
        self.held += capacity
        return seg

    def _make_room(self, capacity: int) -> bool:
        """Unlink free segments, oldest first, until ``capacity`` more bytes fit the cap."""
        if capacity > self.cap:
            return False
        while self.held + capacity > self.cap or not _room_in_shm(capacity):
            victim = next((s for s in self._order if s.free), None)
            if victim is None:
                return False
            self._drop(victim)
        return True

    def _drop(self, seg: _Segment) -> None:
        del self._order[seg]
        self.held -= seg.capacity
        seg.unlink()

    def in_use(self) -> int:
        """Segments whose buffer was sent and not yet read or freed (borrowed ones not counted:
        their reader has them mapped)."""
        return self._count(IN_USE)

    def lent(self) -> int:
        """Segments a reader still reads in place."""
        return self._count(LENT)

    def _count(self, state: int) -> int:
        return sum(1 for s in self.segments if s.map[STATE_AT] == state)

    def close(self, linger: float = 0.0) -> None:
        """Unlink every segment; first wait up to ``linger`` seconds for buffers in flight to be
        read (a reader that opens a descriptor after the unlink fails its task). Idempotent;
        a no-op in a forked child, whose parent still owns the segments."""
        if os.getpid() != self.pid:
            return
        deadline = time.monotonic() + linger
        while linger > 0 and self.in_use() and time.monotonic() < deadline:
            time.sleep(0.002)
        with self._lock:
            self._closed = True
            for seg in list(self.segments):
                self._drop(seg)


def _room_in_shm(capacity: int) -> bool:
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return False
    return capacity <= st.f_bavail * st.f_frsize * FREE_SPACE_FRACTION
