"""Helpers of the interchange that are not routing: binding sockets, throttled warnings, pids."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import zmq

from ..protocol.wire import MAX_MESSAGE_SIZE

#: the front-end's sockets listen here only: it runs on the interchange's host
LOOPBACK = "127.0.0.1"
#: how long closing a socket may wait for its last messages (the pools' Stop) to leave
LINGER_MS = 1000
#: connections a listening socket lets wait to be accepted (ZeroMQ's default is 100; Linux caps
#: it at ``net.core.somaxconn``, 4096 by default): when thousands of pools connect at once, an
#: overflowing queue drops their handshakes, and TCP retries them only after 1, 3, 7, 15 s ...
BACKLOG = 4096


def bind_router(ctx: zmq.Context[zmq.Socket[bytes]], address: str, port: int,
                port_range: tuple[int, int] | None,
                setup: Callable[[zmq.Socket[bytes]], None] | None = None,
                max_message_size: int = MAX_MESSAGE_SIZE) -> tuple[zmq.Socket[bytes], int]:
    """Bind a ROUTER on ``address:port`` (a free port when 0) and return it with its port.

    ``setup``, when given, configures the socket before it binds (CurveZMQ server options
    must be set by then).

    Options: a send to a vanished peer raises instead of vanishing (``ROUTER_MANDATORY``); a
    peer that connects under an identity already connected is ignored, never handed the
    first one's route (no ``ROUTER_HANDOVER``; a peer that reconnects after its connection
    closed gets its identity back); no message part over ``max_message_size`` is taken (ZeroMQ
    closes the connection that sends one); no high-water mark, because what is queued is
    already bounded by the pools' capacity and dropping a task or result would lose it; a
    listen queue of ``BACKLOG`` connections, so pools that all start at once all get in.
    """
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.BACKLOG, BACKLOG)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.MAXMSGSIZE, max_message_size)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.LINGER, LINGER_MS)
    if setup is not None:
        try:
            setup(sock)
        except BaseException:
            sock.close(linger=0)
            raise
    host = address
    if ":" in address:
        sock.setsockopt(zmq.IPV6, 1)
        host = f"[{address}]"
    try:
        if port:
            sock.bind(f"tcp://{host}:{port}")
        elif port_range is not None:
            port = sock.bind_to_random_port(f"tcp://{host}", port_range[0], port_range[1])
        else:
            sock.bind(f"tcp://{host}:*")
            port = int(sock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])
    except zmq.ZMQError:
        sock.close(linger=0)
        raise
    return sock, port


class Throttle:
    """Rate-limits warnings about garbage, so a flood of it cannot flood the log."""

    def __init__(self, logger: logging.Logger, burst: int = 20, window: float = 10.0) -> None:
        self.log, self.burst, self.window = logger, burst, window
        self._start = time.monotonic()
        self._count = self._dropped = 0

    def warn(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._start > self.window:
            if self._dropped:
                self.log.warning("%d more warnings like the above were suppressed", self._dropped)
            self._start, self._count, self._dropped = now, 0, 0
        if self._count < self.burst:
            self._count += 1
            self.log.warning(msg, *args)
        else:
            self._dropped += 1


def process_alive(pid: int) -> bool:
    """Whether a process exists (it may belong to someone else)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
