"""Wake-up hints between the ranks of one host, so that a waiting rank need not poll MPI.

MPICH ranks blocked in an MPI wait spin at 100 % CPU, so idle ranks probe and sleep instead
(:mod:`.backoff`), and a message waits on average half a sleep before it is seen. Ranks that
share rank 0's host also get a *doorbell*: a datagram socket in Linux's abstract namespace,
named after the pool's random token and the rank. After rank 0 sends work to a rank that held
none, it rings that rank's bell; a worker that reports with nothing left to run rings rank
0's. A waiting rank sleeps in ``select`` on its bell (rank 0: and on its ZeroMQ socket) for as
long as its back-off would have slept, so a ring ends the wait at once and a lost or missing
ring costs nothing but the old polling delay. A ring carries no data: the message itself travels over MPI.

Elsewhere than Linux, or where the socket cannot be made, there is no bell and ranks poll.
"""

from __future__ import annotations

import logging
import secrets
import select
import socket
import sys

log = logging.getLogger(__name__)


def new_token() -> str:
    """The pool's part of every bell name (rank 0 makes it and broadcasts it)."""
    return secrets.token_hex(8)


def bell_name(token: str, rank: int) -> str:
    return f"\0rankpool-{token}-{rank}"


class Doorbell:
    """This rank's bell, and ringing other ranks' bells."""

    def __init__(self, token: str, rank: int) -> None:
        self.token = token
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.sock.bind(bell_name(token, rank))
        except OSError:
            self.sock.close()
            raise
        self.sock.setblocking(False)

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

    def ring(self, rank: int) -> None:
        """Wake ``rank`` if it waits on its bell (a full or missing bell is not an error)."""
        try:
            self.sock.sendto(b"!", bell_name(self.token, rank))
        except OSError:
            pass

    def clear(self) -> None:
        """Forget the rings so far (call after waking, before looking for messages)."""
        while True:
            try:
                self.sock.recv(64)
            except OSError:
                return

    def wait(self, seconds: float, also: int | None = None) -> None:
        """Sleep until rung, ``seconds`` passed, or file descriptor ``also`` is readable;
        clears the rings. (``select``, not ``poll``: its timeout is not rounded up to 1 ms.)"""
        fds = [self.sock] if also is None else [self.sock, also]
        ready, _, _ = select.select(fds, [], [], seconds)
        if self.sock in ready:
            self.clear()

    def close(self) -> None:
        self.sock.close()
