"""Wake-up hints between the ranks of one host, so that a waiting rank need not poll MPI.

MPICH ranks blocked in an MPI wait spin at 100 % CPU, so idle ranks probe and sleep instead
(:mod:`.backoff`), and a message waits on average half a sleep before it is seen. Ranks that
share rank 0's host also get a *doorbell*: a datagram socket in Linux's abstract namespace,
named after the pool's random token and the rank. Rank 0 rings a worker's bell with every
message it sends it; a worker rings rank 0's when it reports with nothing left to run, and with
every report, until it runs dry, once one of its tasks ran 1 ms or more (its reports then come
seldom, and rank 0 would poll for them in vain; its report says so). A worker with nothing to
run and nothing in flight sleeps in ``select`` on its bell (``worker.BELL_IDLE`` at a time)
instead of polling MPI: a ring ends the sleep at once, and one that came while it was busy ends
the next sleep at once, so no message waits for a sleep to end. A ring can come before MPICH
shows its message (a peer's message of the same next task may be pulled in first): a ring that
brought nothing makes the rank (a worker, or rank 0) poll for ``RING_GRACE`` before it sleeps
again. Rank 0, while tasks are out, sleeps on its bell and its ZeroMQ socket for as long as its
back-off says, and as long as an idle rank does while all ranks are near and every busy rank
holds one task or rings each report (``Manager.rung_when_done``): each will ring it with its
report. The held ranks of an application task sleep on their bells until the task's first rank
rings them with the task's note (:mod:`.applications`); a short task's first rank may ring
before a held rank has even woken for the task, so a note read by any wait is kept for the
:meth:`Doorbell.wait_for` that asks for it. A ring carries no data beyond its note: the message
itself travels over MPI.

Abstract names are visible to every user of the host (``/proc/net/unix``), so a bell takes
the sender's credentials with each ring (``SO_PASSCRED``) and ignores, and logs, rings from
another uid: they neither end a wait early nor cost more than reading them. A name another
process took first (a squatter) leaves the rank without a bell: it polls, as before.

Elsewhere than Linux, or where the socket cannot be made, there is no bell and ranks poll.
"""

from __future__ import annotations

import logging
import os
import secrets
import select
import socket
import struct
import sys
import time
from collections import deque

log = logging.getLogger(__name__)


#: seconds a rank polls MPI (its back-off) after a ring that brought nothing it could see: the
#: message may sit behind another in MPICH's queue (a peer's, of the same next task), and each
#: probe pulls in only so much
RING_GRACE = 2e-3


def new_token() -> str:
    """The pool's part of every bell name (rank 0 makes it and broadcasts it)."""
    return secrets.token_hex(8)


#: the plain ring, which says nothing more
RING = b"!"
#: notes read before anyone waited for them, kept at most (a note nobody asks for is one whose
#: wait ended otherwise; task ids do not repeat)
_KEPT_NOTES = 64

#: ancillary buffer for one ring's sender credentials (pid, uid, gid)
_CREDENTIALS = socket.CMSG_SPACE(struct.calcsize("3i")) if hasattr(socket, "CMSG_SPACE") else 0
#: seconds between two warnings about rings from another user
_LOG_EVERY = 10.0


def _sender_uid(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The uid in a ring's credentials; -1 (nobody's) when it carries none."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == getattr(socket, "SCM_CREDENTIALS", -1) \
                and len(data) >= 12:
            return int(struct.unpack("3i", data[:12])[1])
    return -1


def bell_name(token: str, rank: int) -> str:
    return f"\0rankpool-{token}-{rank}"


class Doorbell:
    """This rank's bell, and ringing other ranks' bells."""

    def __init__(self, token: str, rank: int) -> None:
        self.token = token
        self.rank = rank
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            self.sock.bind(bell_name(token, rank))
        except OSError:
            self.sock.close()
            raise
        self.sock.setblocking(False)
        self._uid = os.getuid()
        self._notes: deque[bytes] = deque(maxlen=_KEPT_NOTES)  # read, not yet waited for
        self.ignored = 0  # rings from other users, so far
        self._logged_at = -_LOG_EVERY

    @classmethod
    def open(cls, token: str, rank: int) -> Doorbell | None:
        """This rank's bell, or None where there can be none (the rank then polls)."""
        if not sys.platform.startswith("linux"):
            return None
        try:
            return cls(token, rank)
        except OSError as exc:
            log.info("rank %d: no doorbell (%s); polling instead", rank, exc)
            return None

    def ring(self, rank: int, note: bytes = RING) -> None:
        """Wake ``rank`` if it waits on its bell (a full or missing bell is not an error);
        ``note``: what the ring says, for :meth:`wait_for`."""
        try:
            self.sock.sendto(note, bell_name(self.token, rank))
        except OSError:
            pass

    def clear(self) -> bool:
        """Forget the rings so far (call after waking, before looking for messages), but keep
        their notes for :meth:`wait_for`; whether any came from this user (others' are counted
        in ``ignored`` and logged)."""
        return self._read(None)[0]

    def wait_for(self, note: bytes, seconds: float) -> bool:
        """Sleep until this user rings with ``note``, or ``seconds`` passed; other rings are
        read on the way. Whether the note came (it may have come before, and been read by an
        earlier wait)."""
        if note in self._notes:
            self._notes.remove(note)
            return True
        deadline = time.monotonic() + seconds
        while True:
            ready, _, _ = select.select([self.sock], [], [], seconds)
            if ready and self._read(note)[1]:
                return True
            seconds = deadline - time.monotonic()
            if seconds <= 0:
                return False

    def _read(self, note: bytes | None) -> tuple[bool, bool]:
        """Read every ring waiting: whether any came from this user, and whether one of
        those said ``note``; this user's other notes are kept."""
        ours = found = False
        foreign: set[int] = set()
        while True:
            try:
                said, ancillary, _, _ = self.sock.recvmsg(64, _CREDENTIALS)
            except OSError:
                break
            uid = _sender_uid(ancillary)
            if uid == self._uid:
                ours = True
                if said == note:
                    found = True
                elif said != RING:
                    self._notes.append(said)
            else:
                foreign.add(uid)
                self.ignored += 1
        if foreign:
            self._log_ignored(foreign)
        return ours, found

    def _log_ignored(self, uids: set[int]) -> None:
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY:
            self._logged_at = now
            log.warning("rank %d: ignored rings of its doorbell from uid %s, not this user's "
                        "(%d so far); another user of this host is knocking", self.rank,
                        ",".join(map(str, sorted(uids))), self.ignored)

    def wait(self, seconds: float, also: int | None = None) -> bool:
        """Sleep until rung by this user, ``seconds`` passed, or file descriptor ``also`` is
        readable; clears the rings; whether this user rang. (``select``, not ``poll``: its
        timeout is not rounded up to 1 ms.)"""
        fds: list[socket.socket | int] = [self.sock] if also is None else [self.sock, also]
        deadline = time.monotonic() + seconds
        while True:
            ready, _, _ = select.select(fds, [], [], seconds)
            if self.sock not in ready:
                return False
            if self.clear():
                return True
            if len(ready) > 1:
                return False
            seconds = deadline - time.monotonic()  # only others rang: sleep on
            if seconds <= 0:
                return False

    def close(self) -> None:
        self.sock.close()
