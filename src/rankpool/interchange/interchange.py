"""The interchange: routes task batches from one front-end to many pools and results back
(its hops on the data path: ``docs/internals.md``); commands (pools, hold, drain, stop, ...)
come in on a third socket.

This module is its loop: a short list of named steps (poll, drain each socket, dispatch, check
liveness, beat the pools sent nothing for a period, heartbeat the front-end), none of which
blocks; any message that does not follow the protocol is logged and dropped without disturbing
the loop. The interchange reads headers and record tables only and never unpickles anything;
how it moves payloads as bytes is told in :mod:`.routing`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import zmq

from ..errors import ProtocolError
from ..protocol.messages import (
    Cancel,
    Capacity,
    Heartbeat,
    LostCause,
    Register,
    Started,
    Stop,
    decode_message,
)
from ..protocol.wire import decode_header
from ..shm.run import sweep
from ..sockets import readable, recv_frames
from .cancels import forward_started, route_cancel
from .commands import answer
from .endpoints import Frames
from .plumbing import process_alive
from .pools import beat_interval
from .routing import Routing

log = logging.getLogger(__name__)

#: most messages read from one socket before the loop moves on to its other steps
_DRAIN = 1000
#: longest poll wait, so a stop request or an expired peer is noticed promptly
_MAX_WAIT = 0.1
#: most pools sent a heartbeat per loop pass: with many pools the beats are spread over the
#: period's passes instead of stalling routing for one long pass
_BEAT_SLICE = 256


class Interchange(Routing):
    """One interchange: call :meth:`bind`, then :meth:`run` (blocking) in some thread.

    :meth:`stop` may be called from any thread; the loop notices within 0.1 s, sends ``Stop``
    to every pool and returns. Its steps are built in layers: :class:`~.endpoints.Endpoints`
    (sockets and shared state), :class:`~.membership.PoolMembership` (pools joining and
    leaving), :class:`~.routing.Routing` (tasks and results), and here the loop itself.
    """

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        """Route until stopped (stop command, front-end Stop or loss, or :meth:`stop`)."""
        self.bind()
        assert self._pool_sock and self._client_sock and self._command_sock
        poller = zmq.Poller()
        steps: list[tuple[str, zmq.Socket[bytes], Callable[[Frames], None]]] = [
            ("pool", self._pool_sock, self.on_pool_message),
            ("front-end", self._client_sock, self.on_client_message),
            ("command", self._command_sock, self.on_command_message)]
        if self._gate is not None:
            steps += self._gate.steps()
        for _, sock, _ in steps:
            poller.register(sock, zmq.POLLIN)
        period = self.config.heartbeat_period
        next_beat = time.monotonic() + period
        try:
            while not self._done:
                if self._stop_requested.is_set():
                    self.shutdown("interchange stopped")
                    break
                wait = 0.0 if self._beats_left else \
                    min(_MAX_WAIT, max(0.0, next_beat - time.monotonic()))
                ready = dict(poller.poll(int(wait * 1000)))
                self._now = time.monotonic()
                for name, sock, handler in steps:
                    if sock in ready:
                        self._drain(name, sock, handler)
                try:  # a bug here must not take the routing of every pool down with it
                    self.after_messages()
                    if self._now >= next_beat and not self._done:
                        next_beat = self._now + period
                        self.heartbeat()
                except Exception:
                    log.exception("error in the interchange loop; carrying on")
        finally:
            self._close()
            log.info("interchange stopped")

    def after_messages(self) -> None:
        """The loop's steps after its sockets were drained: dispatch, liveness, pool beats."""
        if self._dirty and not self._done:
            self.dispatch()
        self._now = time.monotonic()
        self.check_liveness()
        if not self._done:
            self.beat_pools()

    def _drain(self, name: str, sock: zmq.Socket[bytes], handler: Callable[[Frames], None]) -> None:
        try:
            self._drain_messages(name, sock, handler)
        finally:
            if self.front is not None:
                self.front.flush_results()

    def _drain_messages(self, name: str, sock: zmq.Socket[bytes],
                        handler: Callable[[Frames], None]) -> None:
        """Handle up to ``_DRAIN`` messages. After the first, ask whether another waits (a
        lone message is the common case); once there were two, read until ``zmq.Again``: one
        raised per drain costs less than asking ``EVENTS`` per message, which at 10,000 pools
        took an eighth of the interchange's time in a flood."""
        for n in range(_DRAIN):
            if self._done:
                return
            try:
                frames = recv_frames(sock)
            except zmq.Again:
                return
            try:
                if len(frames) < 2:
                    raise ProtocolError("message without a header frame")
                if len(frames) > 2 and sum(map(len, frames)) > self.config.max_message_size:
                    raise ProtocolError(f"a message of {sum(map(len, frames))} bytes from "
                                        f"{frames[0].bytes!r:.40} is over max_message_size "
                                        f"({self.config.max_message_size} bytes)")
                handler(frames)
            except ProtocolError as exc:
                self._throttle.warn("dropped a message on the %s socket: %s", name, exc)
            except Exception:
                log.exception("error handling a message on the %s socket; dropped", name)
            if n == 0 and not readable(sock):
                return  # drained

    # ------------------------------------------------------------------ the handlers of each socket
    def on_pool_message(self, frames: Frames) -> None:
        identity = frames[0].bytes
        pool = self.pools.get(identity)
        if pool is not None and len(frames) == 2 and frames[1].buffer == self._beat[0]:
            self.pools.touch(pool, self._now)  # a heartbeat as pools write it: no JSON to read
            return
        header = decode_header(frames[1].buffer)
        kind = header["k"]
        if kind == "results":
            if pool is None:
                self._throttle.warn("results from unknown pool %r dropped", identity)
                return
            self.pools.touch(pool, self._now)
            self.on_results(pool, header, frames[1:])
            return
        if len(frames) != 2:
            raise ProtocolError(f"{kind!r:.40} message with {len(frames) - 2} extra frames")
        msg = decode_message(header)
        if isinstance(msg, Register):
            self.on_register(identity, msg)
        elif pool is None:
            self._throttle.warn("%s from unknown or lost pool %r dropped", kind, identity)
        else:
            self.pools.touch(pool, self._now)
            if isinstance(msg, Stop):
                if pool.draining:
                    self.lose(pool, f"pool drained: {msg.reason}", LostCause.DRAINED,
                              tell_pool=False, level=logging.INFO)
                else:
                    self.lose(pool, f"pool stopped: {msg.reason}", LostCause.STOPPED,
                              tell_pool=False)
            elif isinstance(msg, Capacity):
                self.on_capacity(pool, msg)
            elif isinstance(msg, Started):
                forward_started(self, pool, msg)
            elif not isinstance(msg, Heartbeat):
                raise ProtocolError(f"unexpected {kind!r} message from pool {pool.pool_id}")

    def on_client_message(self, frames: Frames) -> None:
        identity = frames[0].bytes
        submit_only = False
        if self._front_sockets:
            role = self._front_sockets.get(identity)
            if role is None:
                raise ProtocolError(f"message from {identity!r:.40}, which is not the front-end")
            identity, submit_only = self._front_main, role
        header = decode_header(frames[1].buffer)
        assert self.front is not None
        kind = header["k"]
        if kind not in ("tasks", "heartbeat", "stop", "cancel") \
                or (submit_only and kind != "tasks"):
            raise ProtocolError(f"unexpected {kind!r:.40} message on the client port")
        self.front.heard(identity, self._now)
        if kind == "tasks":
            self.on_tasks(header, frames[1:])
            return
        if len(frames) != 2:
            raise ProtocolError(f"{kind!r:.40} message with {len(frames) - 2} extra frames")
        msg = decode_message(header)
        if isinstance(msg, Cancel):
            route_cancel(self, msg)
            self._dirty = True
        elif isinstance(msg, Stop):
            log.info("front-end asked to stop: %s", msg.reason)
            self.shutdown(f"front-end stopped: {msg.reason}")
        elif not isinstance(msg, Heartbeat):
            raise ProtocolError(f"unexpected {kind!r} message from the front-end")

    def on_command_message(self, frames: Frames) -> None:
        reply = answer(self, decode_header(frames[1].buffer), frames[2:])
        assert self._command_sock is not None
        try:
            self._command_sock.send_multipart([frames[0].bytes, *reply.encode()], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("could not answer command %r: %s", reply.name, exc)
        if reply.name == "stop" and not reply.error:
            self.shutdown("stop command")

    # ------------------------------------------------------------------ liveness and shutdown
    def check_liveness(self) -> None:
        """Lose pools silent past the threshold (from the front of the last-seen order)."""
        threshold = self.config.heartbeat_threshold
        for pool in self.pools.silent_since(self._now - threshold):
            self.lose(pool, f"no heartbeat for {self._now - pool.last_seen:.1f} s",
                      LostCause.NO_HEARTBEAT, tell_pool=True)
        assert self.front is not None
        silent = self.front.silent_for(self._now)
        if silent > threshold and not self._done:
            log.warning("front-end silent for %.1f s; stopping", silent)
            self.front_end_gone("front-end lost")

    def beat_pools(self) -> None:
        """A heartbeat to the pools sent nothing for a beat interval (at most ``_BEAT_SLICE``
        per pass): a pool being sent tasks needs none. The interval is the period, or longer
        with many pools (:func:`.pools.beat_interval`)."""
        cfg = self.config
        interval = beat_interval(len(self.pools), cfg.heartbeat_period, cfg.heartbeat_threshold)
        closed = []
        due = self.pools.unsent_since(self._now - interval, _BEAT_SLICE)
        self._beats_left = len(due) == _BEAT_SLICE
        for pool in due:
            self.pools.sent(pool, self._now)
            if not self._send_pool(pool.identity, self._beat) \
                    and pool.identity in self._unreachable:
                closed.append(pool)
        self._unreachable.clear()
        for pool in closed:  # its process or node is gone: no need to wait out the threshold
            self.lose(pool, "its connection closed", LostCause.CONNECTION_LOST, tell_pool=False)

    def heartbeat(self) -> None:
        """Once per period: a heartbeat to the front-end; check the parent."""
        assert self.front is not None
        self.front.beat(self._beat)
        pid = self.config.parent_pid
        if pid and not process_alive(pid):
            log.warning("parent process %d is gone; stopping", pid)
            self.front_end_gone("front-end process gone")

    def front_end_gone(self, reason: str) -> None:
        """Stop, and remove the run's shared-memory files: the front-end that would have
        removed them at its shutdown is gone (pool ranks remove their own as they exit)."""
        prefix = self.config.shm_prefix
        if prefix:
            removed = sweep(prefix)
            log.info("removed %d shared-memory files of run %s", len(removed), prefix)
        self.shutdown(reason)

    def shutdown(self, reason: str) -> None:
        """Send Stop to every pool and end the loop."""
        if self._done:
            return
        if self.front is not None:
            self.front.flush_results()
        self._done = True
        stop = Stop(reason).encode()
        for pool in self.pools:
            self._send_pool(pool.identity, stop)
        log.info("stopping (%s); told %d pools to stop; %d tasks queued, %d outstanding", reason,
                 len(self.pools), len(self.queue), len(self.known))
