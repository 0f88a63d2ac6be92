"""The interchange's three sockets (pools, front-end, commands) and the state every step of its
loop shares: binding and closing the sockets, and sending to a pool or to the front-end.

The layers above add the steps: :mod:`.membership` (pools joining, changing and leaving),
:mod:`.routing` (tasks to pools, results back) and :mod:`.interchange` (the loop, its message
handlers, liveness and shutdown). Where this sits on the data path: ``docs/internals.md``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import zmq

from .._version import __version__
from ..protocol.messages import SUBMIT_SUFFIX, Heartbeat, Registered
from ..security import Gatekeeper, open_gate
from ..sockets import send_routed
from .client_link import ClientLink
from .config import InterchangeConfig
from .matching import RoomIndex, TaskQueue
from .plumbing import LINGER_MS, LOOPBACK, Throttle, bind_router
from .pools import PoolTable

log = logging.getLogger(__name__)

Frames = list[zmq.Frame]


class Endpoints:
    """The interchange's sockets and the state its steps share (the whole interchange:
    :class:`~.interchange.Interchange`)."""

    def __init__(self, config: InterchangeConfig) -> None:
        self.config = config
        # the front-end's main socket (False) and its send-only socket for lone tasks (True),
        # when the front-end is pinned; answers always go to the main socket
        front = config.front_identity.encode()
        self._front_main = front
        self._front_sockets = {front: False, front + SUBMIT_SUFFIX.encode(): True} if front else {}
        self.ports: tuple[int, int, int] | None = None
        self.pools = PoolTable()
        self.queue = TaskQueue()
        self.room = RoomIndex()
        self.known: set[int] = set()  # ids queued or in flight
        self.early_cancels: dict[int, None] = {}  # cancelled before they came (see cancels)
        self.finished = 0  # tasks whose result or failure went to the front-end
        self.registered_blocks: set[str] = set()  # blocks that ever had a pool registered
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._pool_sock: zmq.Socket[bytes] | None = None
        self._client_sock: zmq.Socket[bytes] | None = None
        self._command_sock: zmq.Socket[bytes] | None = None
        self._gate: Gatekeeper | None = None
        self.front: ClientLink | None = None
        self._stop_requested = threading.Event()
        self._done = False
        self._dirty = False
        self._now = time.monotonic()
        self._throttle = Throttle(log)
        self._unreachable: set[bytes] = set()  # identities a send found no connection for
        self._beat = Heartbeat().encode()
        # the answer to every accepted registration, encoded once (10,000 pools may register
        # within seconds)
        self._welcome = Registered("", config.heartbeat_period,
                                   config.heartbeat_threshold).encode()
        self._beats_left = False  # pools were due a heartbeat past the last pass's slice

    def bind(self) -> tuple[int, int, int]:
        """Bind the three sockets; return ``(pool_port, client_port, command_port)``.

        With ``curve_dir`` set, a :class:`~rankpool.security.Gatekeeper` binds its ZAP
        handler first and makes every socket a CurveZMQ server before it binds.
        """
        if self.ports is not None:
            return self.ports
        cfg = self.config
        self._ctx = zmq.Context()
        try:
            gate = self._gate = open_gate(self._ctx, cfg.curve_dir, cfg.address,
                                          lambda: Throttle(log).warn)
            rng, cap = cfg.port_range, cfg.max_message_size
            self._pool_sock, pool_port = bind_router(self._ctx, cfg.address, cfg.pool_port, rng,
                                                     gate.setup("pool") if gate else None, cap)
            self._client_sock, client_port = bind_router(
                self._ctx, LOOPBACK, cfg.client_port, rng,
                gate.setup("front-end") if gate else None, cap)
            self._command_sock, command_port = bind_router(
                self._ctx, LOOPBACK, cfg.command_port, rng, gate.setup("command") if gate else None,
                cap)
        except BaseException:
            self._close(linger=0)
            raise
        self.ports = (pool_port, client_port, command_port)
        self.front = ClientLink(self._client_sock, self._throttle, cfg.max_message_size)
        log.info("interchange %s listening: pools on %s:%d, front-end on 127.0.0.1:%d, commands "
                 "on 127.0.0.1:%d; %s", __version__, cfg.address, pool_port, client_port,
                 command_port, f"CurveZMQ, keys in {cfg.curve_dir}" if gate else "unencrypted")
        return self.ports

    def _close(self, linger: int = LINGER_MS) -> None:
        if self._gate is not None:
            self._gate.close()
            self._gate = None
        for sock in (self._pool_sock, self._client_sock, self._command_sock):
            if sock is not None:
                sock.close(linger=linger)
        self._pool_sock = self._client_sock = self._command_sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def stop(self) -> None:
        """Ask the loop to stop; safe from any thread."""
        self._stop_requested.set()

    def send_pool(self, identity: bytes, frames: Sequence[Any]) -> bool:
        """Send to a pool without blocking; False (and a throttled warning) if it failed."""
        return self._send_pool(identity, frames)

    def _send_pool(self, identity: bytes, frames: Sequence[Any]) -> bool:
        assert self._pool_sock is not None
        try:
            send_routed(self._pool_sock, identity, frames)
            return True
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                self._unreachable.add(identity)
            self._throttle.warn("could not send to pool %r: %s", identity, exc)
            return False

    def to_client(self, frames: Sequence[Any]) -> None:
        assert self.front is not None
        self.front.send(frames)
