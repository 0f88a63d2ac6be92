"""The interchange's end of its one front-end connection.

The front-end connects a DEALER to the client ROUTER; the interchange answers whichever
identity last sent it a valid message. What must reach the front-end before it is known (or
while it is away) is kept, in order, and sent as soon as it is heard from again: a result or a
``Lost`` is never dropped for want of an address. Result batches taken in one drain of the pool
socket go out joined into one message.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

import zmq

from ..protocol.result_batches import join_results
from ..protocol.wire import MAX_MESSAGE_SIZE, message_size
from ..sockets import send_routed
from .plumbing import Throttle

log = logging.getLogger(__name__)


class ClientLink:
    """Who the front-end is, when it was last heard from, and what waits for it."""

    def __init__(self, sock: zmq.Socket[bytes], throttle: Throttle,
                 max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        self.sock = sock
        self.max_message_size = max_message_size
        self.identity: bytes | None = None
        self.seen: float | None = None  # None until it has sent anything
        self._throttle = throttle
        self._pending: deque[list[Any]] = deque()
        self._results: list[tuple[int, Sequence[Any], Sequence[Any]]] = []  # to forward

    def heard(self, identity: bytes, now: float) -> None:
        """Record a valid message from the front-end and send whatever waited for it."""
        self.identity = identity
        self.seen = now
        while self._pending and self._send(self._pending[0]):
            self._pending.popleft()

    def silent_for(self, now: float) -> float:
        """Seconds since the front-end was last heard from; 0 before it ever was."""
        return 0.0 if self.seen is None else now - self.seen

    def send(self, frames: Sequence[Any]) -> None:
        """Send a message, or keep it (after any older kept ones) until the front-end is back."""
        if self._pending or not self._send(frames):
            self._pending.append(list(frames))

    def forward_results(self, rows: int, frames: Sequence[Any], body: Sequence[Any]) -> None:
        """Keep a checked result batch (``frames``, ``body`` its frames after the header as
        buffers) for :meth:`flush_results`."""
        self._results.append((rows, frames, body))

    def flush_results(self) -> None:
        """Send the result batches kept since the last flush: one as it came, several joined
        into one message (each as it came when together they pass the message size cap)."""
        if not self._results:
            return
        parts, self._results = self._results, []
        if len(parts) == 1:
            self.send(parts[0][1])
        elif sum(message_size(frames) for _, frames, _ in parts) > self.max_message_size:
            for _, frames, _ in parts:
                self.send(frames)
        else:
            self.send(join_results([(rows, body) for rows, _, body in parts]))

    def beat(self, frames: Sequence[Any]) -> None:
        """Send a heartbeat if the front-end is known; a missed one is not worth keeping."""
        if self.identity is not None and not self._pending:
            self._send(frames)

    def _send(self, frames: Sequence[Any]) -> bool:
        if self.identity is None:
            return False
        try:
            send_routed(self.sock, self.identity, frames)
            return True
        except zmq.ZMQError as exc:
            self._throttle.warn("could not send to the front-end: %s; keeping the message", exc)
            return False
