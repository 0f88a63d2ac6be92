"""The interchange: routes task batches from one front-end to many pools and results back
(its hops on the data path: ``docs/internals.md``); commands (pools, hold, drain, stop, ...)
come in on a third socket.

It reads headers and record tables only and moves payloads as bytes: a batch one pool takes
whole is sent on in the front-end's own frames, other tasks are sliced out of their batches and
joined into one batch per pool; result batches are forwarded as they came, or joined into one
message when one drain of the pool socket took several. Nothing is ever unpickled. The loop
is a short list of named steps (poll, drain each socket, dispatch, check liveness, beat the
pools sent nothing for a period, heartbeat the front-end), none of which blocks; any message
that does not follow the protocol is logged and dropped without disturbing the loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from .._version import __version__
from ..errors import ProtocolError
from ..protocol.batches import (
    Task,
    check_results,
    decode_results,
    decode_tasks,
    encode_results,
    encode_tasks,
    result_ids,
    task_ids,
)
from ..protocol.messages import (
    SUBMIT_SUFFIX,
    Cancel,
    Capacity,
    Drain,
    Heartbeat,
    Lost,
    LostCause,
    RefusalCause,
    Refused,
    Register,
    Registered,
    Started,
    Stop,
    check_versions,
    decode_message,
    version_mismatch,
)
from ..protocol.wire import Buffer, decode_header, under_cap
from ..security import Gatekeeper, open_gate
from ..shm.run import sweep
from .cancels import drop_cancelled, forward_started, route_cancel
from .client_link import ClientLink
from .commands import answer
from .config import InterchangeConfig
from .matching import Entry, RoomIndex, TaskQueue, match
from .plumbing import (
    LINGER_MS,
    LOOPBACK,
    Throttle,
    bind_router,
    process_alive,
    readable,
    recv_frames,
    send_routed,
)
from .pools import Pool, PoolTable, beat_interval, check_capacity, check_shape

log = logging.getLogger(__name__)

#: most messages read from one socket before the loop moves on to its other steps
_DRAIN = 1000
#: longest poll wait, so a stop request or an expired peer is noticed promptly
_MAX_WAIT = 0.1
#: most pools sent a heartbeat per loop pass: with many pools the beats are spread over the
#: period's passes instead of stalling routing for one long pass
_BEAT_SLICE = 256

Frames = list[zmq.Frame]


class Interchange:
    """One interchange: call :meth:`bind`, then :meth:`run` (blocking) in some thread.

    :meth:`stop` may be called from any thread; the loop notices within 0.1 s, sends ``Stop``
    to every pool and returns.
    """

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
        # the last batch queued whole since the last dispatch, with its frames
        self._whole: tuple[list[Task], Frames] | None = None

    # ------------------------------------------------------------------ setup and teardown
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

    # ------------------------------------------------------------------ pools
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

    def on_register(self, identity: bytes, reg: Register) -> None:
        old = self.pools.get(identity)
        if old is not None:
            self.lose(old, "pool registered again (restarted)", LostCause.REGISTERED_AGAIN,
                      tell_pool=False)
        cfg = self.config
        taken = self.pools.id_taken(reg.pool_id)
        if taken:  # the pool that holds the id runs on, and the front-end need not hear of it
            self._throttle.warn("refused a registration from block %r on %s: %s", reg.block_id,
                                ",".join(reg.hosts), taken)
            self._send_pool(identity, Registered(taken, cfg.heartbeat_period,
                                                 cfg.heartbeat_threshold).encode())
            return
        error, refusal = _refusal(reg)
        if refusal is not None:
            self._throttle.warn("refused pool %r of block %r on %s: %s", reg.pool_id,
                                reg.block_id, ",".join(reg.hosts), error)
            self._send_pool(identity, Registered(error, cfg.heartbeat_period,
                                                 cfg.heartbeat_threshold).encode())
            what, ours, theirs = version_mismatch(reg, __version__) or ("", "", "")
            self.to_client(Refused(reg.block_id, reg.pool_id, list(reg.hosts), error, what, ours,
                                   theirs, refusal).encode())
            self.to_client(Lost(reg.block_id, list(reg.hosts), error, [],
                                LostCause.REFUSED).encode())
            return
        pool = Pool.from_register(identity, reg, cfg.prefetch, self._now)
        self.pools.add(pool)
        self.registered_blocks.add(pool.block_id)
        self.room.add(pool)
        self._dirty = True
        self._send_pool(identity, self._welcome)
        log.info("registered pool %r of block %r: hosts %s, worker ranks %s, widest %d, "
                 "rankpool %s, Python %s", pool.pool_id, pool.block_id, ",".join(pool.hosts),
                 pool.node_ranks, pool.widest, pool.rankpool, pool.python)

    def on_capacity(self, pool: Pool, report: Capacity) -> None:
        """A pool's usable ranks changed: fit its record to them; a pool with stuck ranks is
        degraded and drained, so that its block ends and can be replaced by a whole one, and
        so is one that retires; one that lost ranks to deaths serves on, smaller."""
        error = check_capacity(pool, report)
        if error:
            raise ProtocolError(f"capacity report of pool {pool.pool_id!r}: {error}")
        old = pool.widest
        pool.reshape(report, self.config.prefetch)
        self.room.reshape(pool, old)
        self._dirty = True
        if report.lost:
            log.warning("pool %r of block %r on %s lost worker ranks %s (they died)%s; usable "
                        "worker ranks %s, widest task %d", pool.pool_id, pool.block_id,
                        ",".join(pool.hosts), pool.lost,
                        ": it retires" if report.retiring else "", pool.node_ranks, pool.widest)
        if report.retiring and not report.stuck:
            if not pool.draining:
                self.drain(pool)
            return
        if not report.stuck:
            if not report.lost:
                log.info("pool %r of block %r: no rank is stuck any more; worker ranks %s, "
                         "widest %d", pool.pool_id, pool.block_id, pool.node_ranks, pool.widest)
            return
        log.warning("pool %r of block %r on %s is degraded: ranks %s are stuck in tasks that never "
                    "ended; usable worker ranks %s, widest task %d", pool.pool_id, pool.block_id,
                    ",".join(pool.hosts), pool.stuck, pool.node_ranks, pool.widest)
        if not pool.draining:
            self.drain(pool)

    def on_results(self, pool: Pool, header: dict[str, Any], frames: Frames) -> None:
        """Account for a result batch and pass it on unchanged (or only its known tasks).

        The front-end forwards what one drain of the pool socket took as one message."""
        body: list[Buffer] = [f.buffer for f in frames[1:]]
        try:
            ids = check_results(header, body)
        except ProtocolError as exc:
            # the tasks ended but their results cannot be delivered: fail them rather than hang
            done = self._ended(pool, result_ids(header, body))
            if done:
                self.to_client(Lost(pool.block_id, pool.hosts, f"malformed result batch: {exc}",
                                    done, LostCause.MALFORMED_RESULTS).encode())
            raise
        done = self._ended(pool, ids)
        out: Sequence[Any] = frames
        rows = header["n"]
        if len(done) < len(ids):
            self._throttle.warn("pool %r returned %d results of tasks not in flight there; "
                                "dropped", pool.pool_id, len(ids) - len(done))
            if not done:
                return
            keep = set(done)
            out = encode_results([r for r in decode_results(header, body) if r.task_id in keep])
            rows, body = decode_header(out[0])["n"], out[1:]
        assert self.front is not None
        self.front.forward_results(rows, out, body)

    def _ended(self, pool: Pool, ids: list[int]) -> list[int]:
        """Account for tasks a pool says ended; return those that were in flight there."""
        done = pool.finish_many(ids)
        self.known.difference_update(done)
        self.finished += len(done)
        self.room.offer(pool)
        self._dirty = True
        return done

    def lose(self, pool: Pool, reason: str, cause: LostCause, *, tell_pool: bool,
             level: int = logging.WARNING) -> None:
        """Forget a pool and report its in-flight tasks to the front-end as lost (``reason``
        for people, ``cause`` for the front-end's code)."""
        was = pool.available
        pool.gone = True
        self.room.set_available(pool, was)
        self.pools.remove(pool)
        ids = list(pool.in_flight)
        self.known.difference_update(ids)
        self.finished += len(ids)
        pool.in_flight.clear()
        pool.used = 0
        log.log(level, "pool %r of block %r on %s left: %s; %d tasks in flight lost", pool.pool_id,
                pool.block_id, ",".join(pool.hosts), reason, len(ids))
        if tell_pool:
            self._send_pool(pool.identity, Stop(reason).encode())
        self.to_client(Lost(pool.block_id, list(pool.hosts), reason, ids, cause).encode())

    def dispatch(self) -> None:
        """Send queued tasks to pools with room: one batch per pool per pass (in messages
        under the run's cap: tasks of several front-end batches may go in one)."""
        self._dirty = False
        whole, self._whole = self._whole, None
        for pool, entries in match(self.queue, self.room):
            sent = 0
            if not pool.gone:
                tasks: list[Task] = [t for _, t in entries]
                forwarded = _forwarded(whole, tasks)
                parts: list[tuple[list[Entry], Sequence[Any]]] = (
                    [(entries, forwarded)] if forwarded is not None
                    else under_cap(entries, _encode_entries, self.config.max_message_size))
                for part, frames in parts:
                    if not self._send_pool(pool.identity, frames):
                        break
                    sent += len(part)
                if sent == len(entries):
                    self.pools.sent(pool, self._now)
                    continue
            unsent = entries[sent:]
            pool.finish_many([task.task_id for _, task in unsent])
            self.queue.push_back(unsent)
            self._dirty = True
            if not pool.gone:
                self.lose(pool, "connection to the pool lost", LostCause.CONNECTION_LOST,
                          tell_pool=False)

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

    # ------------------------------------------------------------------ the front-end
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

    def on_tasks(self, header: dict[str, Any], frames: Frames) -> None:
        """Queue a task batch (``frames``: its header frame and body)."""
        body = [f.buffer for f in frames[1:]]
        try:
            tasks = decode_tasks(header, body)
        except ProtocolError as exc:
            self._refuse_batch(task_ids(header, body), str(exc))
            raise
        whole = True  # the batch's frames still carry exactly its tasks
        if self.early_cancels:
            count = len(tasks)
            tasks = drop_cancelled(self, tasks)
            whole = len(tasks) == count
        known, ids = self.known, [task.task_id for task in tasks]
        if known.isdisjoint(ids):
            size = len(known)
            known.update(ids)
            if len(known) - size == len(ids):  # no id seen twice (the rule): queued at once
                self.queue.push_many(tasks)
                self._dirty = True
                self._whole = (tasks, frames) if whole else None
                return
            known.difference_update(ids)  # a batch that repeats an id: one at a time
        for task in tasks:
            if task.task_id in known:
                self._throttle.warn("task id %d is already queued or running; duplicate dropped",
                                    task.task_id)
                continue
            known.add(task.task_id)
            self.queue.push(task)
        self._dirty = True

    def _refuse_batch(self, ids: list[int], why: str) -> None:
        """Fail the tasks of a batch that cannot be read, when their ids can be, so none hangs."""
        ids = [i for i in ids if i not in self.known]
        if ids:
            self.finished += len(ids)
            self.to_client(Lost("", [], f"interchange refused a malformed task batch: {why}",
                                ids, LostCause.MALFORMED_TASKS).encode())

    def to_client(self, frames: Sequence[Any]) -> None:
        assert self.front is not None
        self.front.send(frames)

    # ------------------------------------------------------------------ commands
    def on_command_message(self, frames: Frames) -> None:
        reply = answer(self, decode_header(frames[1].buffer), frames[2:])
        assert self._command_sock is not None
        try:
            self._command_sock.send_multipart([frames[0].bytes, *reply.encode()], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("could not answer command %r: %s", reply.name, exc)
        if reply.name == "stop" and not reply.error:
            self.shutdown("stop command")

    def hold(self, pool: Pool, held: bool) -> None:
        """Stop (or resume) giving a pool new tasks; what it holds runs on."""
        was = pool.available
        pool.held = held
        self.room.set_available(pool, was)
        self._dirty = True

    def drain(self, pool: Pool) -> None:
        """Hold a pool for good and tell it to finish its tasks and leave (it answers Stop)."""
        was = pool.available
        pool.held = pool.draining = True
        self.room.set_available(pool, was)
        self._send_pool(pool.identity, Drain().encode())
        log.info("draining pool %r of block %r (%d tasks in flight)", pool.pool_id, pool.block_id,
                 len(pool.in_flight))

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


def _encode_entries(entries: list[Entry]) -> Sequence[Any]:
    return encode_tasks([t for _, t in entries])


def _forwarded(whole: tuple[list[Task], Frames] | None, tasks: list[Task]) -> Frames | None:
    """The front-end's own frames when ``tasks`` are exactly the batch they carried, in order
    (a lone task, or a batch one pool takes whole): checked once already, sent as they came."""
    if whole is None or len(whole[0]) != len(tasks):
        return None
    if any(a is not b for a, b in zip(whole[0], tasks)):
        return None
    return whole[1]


def _refusal(reg: Register) -> tuple[str, RefusalCause | None]:
    """Why a registration is refused (the message, and its cause), or ``("", None)``."""
    error = check_versions(reg, __version__)
    if error:
        return error, RefusalCause.VERSION_MISMATCH
    error = check_shape(reg)
    if error:
        return error, RefusalCause.SHAPE
    if reg.init_error:
        return reg.init_error, RefusalCause.INIT_FAILED
    return "", None
