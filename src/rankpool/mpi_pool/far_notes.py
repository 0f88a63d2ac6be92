"""Death notes from worker ranks on other nodes than rank 0's, sent by their keepers over TCP.

Rank 0 sees the keepers of its own node exit through pidfds (:mod:`.deaths`); a keeper on
another node is out of its sight, so it reports instead. Rank 0 listens on a TCP port, its
*note box*, and tells every rank the box's address and a secret of the pool (32 random bytes,
broadcast over MPI, so only the pool's own processes hold it). When a worker rank there dies,
its keeper connects and sends its note (JSON), a newline and the note's HMAC-SHA256 under the
secret, then closes: the secret itself never crosses the network.

The port is open to anyone who can reach the node, so rank 0 trusts nothing it reads there:
it takes a note only whole (the sender closed), under :data:`NOTE_LIMIT` bytes, signed with
the secret, and for a rank it watches there with the pid it knows for that rank (a note
replayed by someone who saw it pass tells of a death already known); anything else
is dropped and logged. At most :data:`MAX_OPEN` connections are read at once and one that
sent nothing whole within :data:`NOTE_DEADLINE` seconds is closed: a stranger can neither
grow rank 0's memory nor hold its loop. A keeper that is killed itself (which kills its rank
too) sends nothing: that death is seen only when the launcher ends the job, or at the task's
``walltime``.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import select
import socket
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

#: the most bytes rank 0 reads from one connection (a note is ~150)
NOTE_LIMIT = 4096
#: seconds a connection may take to deliver its note whole
NOTE_DEADLINE = 5.0
#: connections read at once; more are closed on arrival
MAX_OPEN = 64
#: seconds a keeper tries to deliver its note
SEND_TIMEOUT = 10.0


class NoteBox:
    """Rank 0's end: a listening socket registered in ``epoll``, with the connections that
    are being read, each registered there too."""

    def __init__(self, epoll: select.epoll, ranks: Mapping[int, int],
                 host: str | None = None) -> None:
        """``ranks``: rank -> pid of the ranks whose notes are taken."""
        self.epoll = epoll
        self.ranks = dict(ranks)
        self.secret = secrets.token_hex(32)
        if socket.has_dualstack_ipv6():
            self.listener = socket.create_server(("", 0), family=socket.AF_INET6,
                                                 backlog=MAX_OPEN, dualstack_ipv6=True)
        else:
            self.listener = socket.create_server(("", 0), backlog=MAX_OPEN)
        self.listener.setblocking(False)
        self.host = host or socket.gethostname()
        self.open: dict[int, tuple[socket.socket, bytearray, float]] = {}
        epoll.register(self.listener.fileno(), select.EPOLLIN)

    @property
    def address(self) -> str:
        """What a keeper needs to send a note: ``host:port:secret``."""
        return f"{self.host}:{self.listener.getsockname()[1]}:{self.secret}"

    def owns(self, fd: int) -> bool:
        return fd == self.listener.fileno() or fd in self.open

    def ready(self, fd: int) -> list[dict[str, Any]]:
        """Handle ``fd`` (readable): accept, or read; the notes that arrived whole."""
        if fd == self.listener.fileno():
            self._accept()
            return []
        conn, data, _ = self.open[fd]
        try:
            chunk = conn.recv(NOTE_LIMIT + 1 - len(data))
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            chunk = b""
        if chunk:
            data += chunk
            if len(data) > NOTE_LIMIT:
                log.warning("dropped a death note over %d bytes from %s", NOTE_LIMIT,
                            _peer(conn))
                self._close(fd)
            return []
        self._close(fd)  # the sender closed: the note is whole
        note = self._check(bytes(data), _peer(conn))
        return [note] if note is not None else []

    def expire(self, now: float | None = None) -> None:
        """Close the connections that did not deliver a note in time."""
        now = time.monotonic() if now is None else now
        for fd, (conn, _, since) in list(self.open.items()):
            if now - since > NOTE_DEADLINE:
                log.warning("closed a connection to the death-note port that sent no whole "
                            "note in %g s (from %s)", NOTE_DEADLINE, _peer(conn))
                self._close(fd)

    def close(self) -> None:
        for fd in list(self.open):
            self._close(fd)
        try:
            self.epoll.unregister(self.listener.fileno())
        except (OSError, ValueError):
            pass
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, for instance: try at the next event
                log.warning("cannot accept on the death-note port: %s", exc)
                return
            if len(self.open) >= MAX_OPEN:
                log.warning("closed a connection to the death-note port from %s: %d are "
                            "open already", _peer(conn), MAX_OPEN)
                conn.close()
                continue
            conn.setblocking(False)
            self.open[conn.fileno()] = (conn, bytearray(), time.monotonic())
            self.epoll.register(conn.fileno(), select.EPOLLIN)

    def _close(self, fd: int) -> None:
        conn, _, _ = self.open.pop(fd)
        try:
            self.epoll.unregister(fd)
        except (OSError, ValueError):
            pass
        conn.close()

    def _check(self, data: bytes, peer: str) -> dict[str, Any] | None:
        body, _, signature = data.rpartition(b"\n")
        if not hmac.compare_digest(signature, sign(self.secret, body)):
            log.warning("dropped a death note not signed with the pool's secret from %s", peer)
            return None
        try:
            note = json.loads(body)
            rank, pid = note["rank"], note["pid"]
        except (ValueError, TypeError, KeyError):
            log.warning("dropped a malformed death note from %s", peer)
            return None
        if type(rank) is not int or type(pid) is not int or self.ranks.get(rank) != pid:
            log.warning("dropped a death note for rank %r pid %r from %s: not a rank this "
                        "pool watches on another node", rank, pid, peer)
            return None
        return dict(note)


def sign(secret: str, body: bytes) -> bytes:
    """The signature of a note: its HMAC-SHA256 under the pool's secret, in hex."""
    return hmac.new(secret.encode(), body, "sha256").hexdigest().encode()


def send_note(address: str, note: dict[str, Any]) -> bool:
    """Deliver ``note`` to the box at ``address`` (``host:port:secret``); False, with the
    reason on stderr, where it cannot."""
    host = address.split(":", 1)[0]
    try:
        host, port, secret = address.rsplit(":", 2)
        body = json.dumps(note).encode()
        data = body + b"\n" + sign(secret, body)
        with socket.create_connection((host, int(port)), timeout=SEND_TIMEOUT) as conn:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)  # the note is whole
        return True
    except (OSError, ValueError) as exc:
        os.write(2, f"rankpool keeper: cannot send the death note of rank {note.get('rank')} "
                    f"to rank 0 at {host}: {exc}\n".encode())
        return False


def _peer(conn: socket.socket) -> str:
    try:
        host, port = conn.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "an unknown address"
