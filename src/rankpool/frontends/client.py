"""The submit side's link to the interchange: its process, its sockets, one thread (its hops
on the data path: ``docs/internals.md``).

The thread owns the task socket: it sends whatever piled up in the inbox as one batch (a
flood goes in bulk), hands result batches to ``on_results`` (as ``split_results`` gives
them: plain values, or whole results), sends heartbeats and declares the
interchange lost (``on_broken``) when it exits or has been silent past the threshold. A task
submitted alone (nothing queued, no other submit within ``LONE_GAP``) skips the hand-over to
the thread: the submitting thread sends it on a send-only socket under a lock, which saves a
thread wake-up (a tenth of a millisecond here) on every round trip. Commands (list pools,
hold, drain, ...) go over a third socket under a lock, so any thread may call
:meth:`InterchangeClient.command`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import repeat, starmap
from typing import Any

import zmq

from ..errors import ProtocolError
from ..interchange.config import InterchangeConfig
from ..protocol import batches, result_batches, wire
from ..protocol import messages as protocol
from ..protocol.batches import ROW, TaskRow
from ..protocol.messages import SUBMIT_SUFFIX
from ..protocol.result_batches import Result, Values
from ..protocol.wire import under_cap
from ..sockets import readable, recv_frames, send_frames

log = logging.getLogger(__name__)

#: most tasks in one message to the interchange
BATCH = 1024
#: a task submitted this long after the previous one is sent at once by the submitting thread
LONE_GAP = 0.0005


class InterchangeClient:
    """Starts an interchange process and talks to it; call :meth:`start` then :meth:`submit`."""

    def __init__(self, config: InterchangeConfig, *,
                 on_results: Callable[[Values, list[Result]], None],
                 on_lost: Callable[[protocol.Lost], None],
                 on_broken: Callable[[str], None],
                 on_refused: Callable[[protocol.Refused], None] | None = None) -> None:
        if not config.front_identity:  # only this client may talk on the client port
            config = dataclasses.replace(config, front_identity=f"front-{secrets.token_hex(8)}")
        self.config = config
        self.on_results = on_results
        self.on_lost = on_lost
        self.on_broken = on_broken
        self.on_refused = on_refused
        #: told the ids of tasks that started on their ranks (None: nobody listens)
        self.on_started: Callable[[list[int]], Any] | None = None
        #: told the ids of tasks the interchange dropped on a cancel (None: nobody listens)
        self.on_cancelled: Callable[[list[int]], Any] | None = None
        self.cancels: deque[int] = deque()  # tasks to drop, sent by the thread
        #: the fields of the tasks to send, row after row (``ROW`` a task: no object each)
        self.inbox: deque[Any] = deque()
        self.ports: dict[str, int] = {}
        self.proc: subprocess.Popen[str] | None = None
        self.ctx = zmq.Context()
        self._cmd_lock = threading.Lock()
        self._submit_lock = threading.Lock()  # guards submit_sock
        self._last_submit = 0.0
        self.submit_sock: zmq.Socket[bytes] | None = None
        self._idle = False
        self._stop = False
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        self._thread = threading.Thread(target=self._run, name="rankpool-client", daemon=True)
        self.last_heard = time.monotonic()

    # -- life cycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> None:
        """Start the interchange process, read its ports, connect, start the thread."""
        cmd = [sys.executable, "-m", "rankpool.interchange"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, start_new_session=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(self.config.to_json())
        self.proc.stdin.close()
        line = _readline(self.proc, timeout)
        try:
            self.ports = json.loads(line)
            self.ports["pool_port"], self.ports["client_port"], self.ports["command_port"]
        except (ValueError, KeyError, TypeError) as exc:
            self.proc.kill()
            raise RuntimeError(f"the interchange did not start: {line!r} (exit code "
                               f"{self.proc.poll()}; see its log in "
                               f"{self.config.run_dir or 'stderr'})") from exc
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.IDENTITY, self.config.front_identity.encode())
        self.sock.setsockopt(zmq.LINGER, 0)
        self.cmd_sock = self.ctx.socket(zmq.DEALER)
        self.cmd_sock.setsockopt(zmq.LINGER, 0)
        submit_sock = self.ctx.socket(zmq.DEALER)
        submit_sock.setsockopt(zmq.IDENTITY, (self.config.front_identity + SUBMIT_SUFFIX).encode())
        submit_sock.setsockopt(zmq.LINGER, 0)
        for sock in (self.sock, self.cmd_sock, submit_sock):
            sock.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_size)
        if self.config.curve_dir:  # the front-end's own key pair, on every socket
            from ..security import CurveKeys, client_curve
            keys = CurveKeys.at(self.config.curve_dir)
            try:
                for sock in (self.sock, self.cmd_sock, submit_sock):
                    client_curve(sock, keys.server_public, keys.secret("front"))
            except BaseException:
                self.proc.kill()
                self.proc.wait()
                raise
        self.sock.connect(f"tcp://127.0.0.1:{self.ports['client_port']}")
        submit_sock.connect(f"tcp://127.0.0.1:{self.ports['client_port']}")
        self.submit_sock = submit_sock
        self.cmd_sock.connect(f"tcp://127.0.0.1:{self.ports['command_port']}")
        self.sock.send_multipart(protocol.Heartbeat().encode())
        self.last_heard = time.monotonic()
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the interchange (it stops its pools) and the thread; idempotent."""
        if self._stop:
            return
        self._stop = True
        self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.command("stop", timeout=2.0)
            except (TimeoutError, RuntimeError):
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("the interchange did not exit within %.0f s; killing it", timeout)
                self.proc.kill()
                self.proc.wait()
        with self._submit_lock:
            if self.submit_sock is not None:
                self.submit_sock.close()
                self.submit_sock = None
        for sock in (getattr(self, "sock", None), getattr(self, "cmd_sock", None)):
            if sock is not None:
                sock.close()
        self.ctx.term()
        os.close(self._rfd)
        os.close(self._wfd)

    def kill(self) -> None:
        """Kill the interchange process now (a second Ctrl-C); :meth:`stop` still closes."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    @property
    def pool_address(self) -> str:
        host = self.config.address
        if host in ("*", "0.0.0.0"):
            import socket
            host = socket.gethostname()
        return f"tcp://{host}:{self.ports['pool_port']}"

    # -- submit side ------------------------------------------------------------------------------
    def submit(self, task: TaskRow) -> None:
        now = time.monotonic()
        lone = now - self._last_submit > LONE_GAP
        self._last_submit = now
        if lone and not self.inbox and self._send_now(task):
            return
        self.inbox.extend(task)  # one call: rows of several submitting threads never mix
        if self._idle:  # asleep in its poll: wake it once (it takes the whole inbox)
            self._idle = False
            self._wake()

    def _send_now(self, task: TaskRow) -> bool:
        """Send a lone task from the calling thread; False if the socket is busy or full."""
        if not self._submit_lock.acquire(blocking=False):
            return False
        try:
            if self.submit_sock is None:
                return False
            send_frames(self.submit_sock, batches.encode_rows(task), block=False)
            return True
        except zmq.ZMQError:
            return False
        finally:
            self._submit_lock.release()

    def command(self, name: str, arg: str = "", timeout: float = 10.0) -> Any:
        """Ask the interchange; return the reply's value or raise with its error."""
        with self._cmd_lock:
            return ask_interchange(self.cmd_sock, name, arg, timeout)

    def _wake(self) -> None:
        try:
            os.write(self._wfd, b"x")
        except (BlockingIOError, OSError):
            pass

    # -- the thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self._rfd, zmq.POLLIN)
        period = self.config.heartbeat_period
        threshold = self.config.heartbeat_threshold
        last_sent = last_check = time.monotonic()
        try:
            while not self._stop:
                self._idle = True
                timeout = 0 if self.inbox else max(0.0, min(last_sent + period, last_check + 0.2)
                                                   - time.monotonic())
                events = dict(poller.poll(int(timeout * 1000)))
                self._idle = False
                if self._rfd in events:
                    try:
                        os.read(self._rfd, 4096)
                    except BlockingIOError:
                        pass
                if self.inbox:
                    self._send_batches()
                    last_sent = time.monotonic()
                if self.cancels:
                    self._send_cancels()
                if self.sock in events:
                    self._receive()
                now = time.monotonic()
                if now - last_sent >= period:
                    self.sock.send_multipart(protocol.Heartbeat().encode())
                    last_sent = now
                if now - last_check >= 0.2:
                    last_check = now
                    code = self.proc.poll() if self.proc is not None else None
                    if code is not None:
                        self.on_broken(f"the interchange process exited with code {code}")
                        return
                    if now - self.last_heard > threshold:
                        self.on_broken(f"the interchange has been silent for "
                                       f"{now - self.last_heard:.1f} s (threshold {threshold:g} s)")
                        return
        except BaseException as exc:  # a bug: never leave futures hanging
            log.exception("the client thread failed")
            self.on_broken(f"the client thread failed: {exc!r}")

    def _send_batches(self) -> None:
        inbox, take = self.inbox, self.inbox.popleft
        while len(inbox) >= ROW:  # each submit adds its whole row in one call
            rows = list(starmap(take, repeat((), ROW * min(BATCH, len(inbox) // ROW))))
            self._send_batch(rows)

    def _send_batch(self, rows: list[Any]) -> None:
        """One message, or halves of it while it is over the run's message cap (each task
        fits: the engine refused larger ones at submit)."""
        for _, frames in under_cap(rows, batches.encode_rows, self.config.max_message_size, ROW):
            send_frames(self.sock, frames)

    def cancel(self, task_ids: list[int]) -> None:
        """Have these tasks dropped wherever they wait (their futures asked to cancel them),
        from the thread, after any batch that carries them."""
        self.cancels.extend(task_ids)
        self._wake()

    @property
    def thread_ident(self) -> int | None:
        """The client thread's: it settles the futures."""
        return self._thread.ident

    def _send_cancels(self) -> None:
        cancels = self.cancels
        ids = [cancels.popleft() for _ in range(len(cancels))]
        for part in protocol.id_slices(ids):
            self.sock.send_multipart(protocol.Cancel(part).encode())

    def _receive(self) -> None:
        sock = self.sock
        while True:
            try:
                frames = recv_frames(sock)
            except zmq.Again:
                return
            self.last_heard = time.monotonic()
            try:
                self._handle(frames)
            except ProtocolError as exc:
                log.warning("dropped a malformed message from the interchange: %s", exc)
            except BaseException:  # settling futures raised: this thread must carry on
                log.exception("handling a message from the interchange failed; carrying on")
            if not readable(sock):
                return  # drained (asking is far cheaper than a zmq.Again raised)

    def _handle(self, frames: list[Any]) -> None:
        header = wire.decode_header(frames[0].buffer)
        if header["k"] == "results":
            self.on_results(*result_batches.split_results(header, [f.buffer for f in frames[1:]]))
            return
        msg = protocol.decode_message(header)
        if isinstance(msg, protocol.Lost):
            self.on_lost(msg)
        elif isinstance(msg, protocol.Started):
            if self.on_started is not None:
                self.on_started(msg.task_ids)
        elif isinstance(msg, protocol.Cancelled):
            if self.on_cancelled is not None:
                self.on_cancelled(msg.task_ids)
        elif isinstance(msg, protocol.Refused):
            log.error("the interchange refused pool %s of block %s on %s: %s", msg.pool_id,
                      msg.block_id, msg.hosts, msg.reason)
            if self.on_refused is not None:
                self.on_refused(msg)
        elif not isinstance(msg, protocol.Heartbeat):
            log.warning("ignored unexpected %s message from the interchange", msg.KIND)


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """Read the first line the process prints, or give up after ``timeout``."""
    box: list[str] = []
    stdout = proc.stdout
    assert stdout is not None  # started with stdout=PIPE
    reader = threading.Thread(target=lambda: box.append(stdout.readline()),
                              daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0] if box else ""


def ask_interchange(sock: Any, name: str, arg: str, timeout: float) -> Any:
    """One command over a DEALER on the interchange's command port: its reply's value.

    A late reply to an earlier command that timed out is skipped; TimeoutError when no answer
    comes within ``timeout``, RuntimeError with the interchange's error when it refused.
    """
    deadline = time.monotonic() + timeout
    sock.send_multipart(protocol.Command(name, arg).encode())
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not sock.poll(int(left * 1000) + 1):
            raise TimeoutError(f"the interchange did not answer {name!r} within {timeout:g} s")
        frames = sock.recv_multipart()
        reply = protocol.decode_message(wire.decode_header(frames[0]))
        if not isinstance(reply, protocol.Reply):
            raise ProtocolError(f"expected a reply to {name!r}, got {reply.KIND}")
        if reply.name == name:
            break
    if reply.error:
        raise RuntimeError(f"interchange command {name!r}: {reply.error}")
    return reply.value
