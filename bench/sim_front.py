"""The scale simulation's bare front-end: one DEALER on the interchange's client port that
sends pre-encoded no-op task batches and counts the results.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import zmq

from rankpool.protocol.batches import Task, encode_tasks
from rankpool.protocol.messages import Command, Heartbeat, decode_message
from rankpool.protocol.wire import decode_header
from rankpool.task.resources import DEFAULT_SPEC

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from sim_roles import FN_BYTES, FN_DIGEST, FRONT_IDENTITY  # noqa: E402


def _tasks(base: int, k: int) -> list[Task]:
    return [Task(base + i, DEFAULT_SPEC, FN_DIGEST, FN_BYTES, b"()") for i in range(k)]


class Front:
    """A bare front-end: a DEALER on the client port, and one on the command port."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], ports: dict[str, int],
                 period: float) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.IDENTITY, FRONT_IDENTITY.encode())
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.connect(f"tcp://127.0.0.1:{ports['client_port']}")
        self.cmd = ctx.socket(zmq.DEALER)
        self.cmd.setsockopt(zmq.LINGER, 0)
        self.cmd.connect(f"tcp://127.0.0.1:{ports['command_port']}")
        self.period = period
        self.last_sent = 0.0
        self.next_id = 1

    def send(self, frames: Sequence[Any]) -> None:
        self.sock.send_multipart(frames, copy=False)
        self.last_sent = time.monotonic()

    def keep_alive(self) -> None:
        if time.monotonic() - self.last_sent >= self.period / 2:
            self.send(Heartbeat().encode())

    def recv_results(self, timeout: float) -> int:
        """Wait for the next result batch; return how many results it holds (0 on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(min(left, self.period / 4) * 1000):
                self.keep_alive()
                if time.monotonic() >= deadline:
                    return 0
                continue
            frames = self.sock.recv_multipart(copy=False)
            header = decode_header(frames[0].buffer)
            if header["k"] == "results":
                return header["n"]
            if header["k"] == "lost":
                raise RuntimeError(f"interchange reported lost tasks: {header!r:.300}")

    def command(self, name: str, arg: str = "", timeout: float = 60.0) -> Any:
        self.cmd.send_multipart(Command(name, arg).encode())
        if not self.cmd.poll(timeout * 1000):
            raise RuntimeError(f"no answer to command {name!r} within {timeout} s")
        reply = decode_message(decode_header(self.cmd.recv_multipart()[0]))
        return reply.value  # type: ignore[attr-defined]

    def wait(self, seconds: float) -> None:
        """Stay connected (heartbeats) for ``seconds``, dropping whatever arrives."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.sock.poll(min(0.1, max(0.0, end - time.monotonic())) * 1000):
                self.sock.recv_multipart()
            self.keep_alive()

    def encode_flood(self, n: int, batch: int) -> list[list[Any]]:
        """Pre-encoded batches of ``n`` fresh no-op tasks, so encoding is not timed."""
        out = []
        for start in range(0, n, batch):
            out.append(encode_tasks(_tasks(self.next_id + start, min(batch, n - start))))
        self.next_id += n
        return out

    def flood(self, batches: list[list[Any]], n: int, window: int) -> float:
        """Send the batches keeping at most ``window`` tasks outstanding; seconds taken."""
        sizes = [decode_header(b[0])["n"] for b in batches]
        start = time.perf_counter()
        sent = done = 0
        it = iter(batches)
        k = 0
        while done < n:
            while k < len(batches) and sent - done < window:
                self.send(next(it))
                sent += sizes[k]
                k += 1
            got = self.recv_results(60.0)
            if not got:
                raise RuntimeError(f"no results for 60 s ({done} of {n} back)")
            done += got
        return time.perf_counter() - start

    def latency(self, count: int) -> list[float]:
        samples = []
        for _ in range(count):
            frames = encode_tasks(_tasks(self.next_id, 1))
            self.next_id += 1
            t = time.perf_counter()
            self.send(frames)
            if self.recv_results(30.0) != 1:
                raise RuntimeError("single task not answered within 30 s")
            samples.append(time.perf_counter() - t)
        return samples
