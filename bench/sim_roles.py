"""The processes of the scale simulation: an interchange with a timer around its heartbeat
step, and pool hosts that each register many simulated pools and answer every task batch at
once. ``scale_sim.py --role interchange|pools`` runs them.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import pickle
import random
import resource
import select
import subprocess
import sys
import time

import zmq

from rankpool._version import __version__
from rankpool.protocol.batches import task_ids
from rankpool.protocol.messages import (
    PROTOCOL_VERSION,
    PYTHON_VERSION,
    Heartbeat,
    Register,
)
from rankpool.protocol.wire import encode_header, pack_ints

try:  # the result batches' module since round 12 (older builds: protocol.batches)
    from rankpool.protocol.result_batches import OK
except ImportError:
    from rankpool.protocol.batches import OK  # type: ignore[attr-defined,no-redef]

#: sockets one pool-host process opens at most (2 descriptors each; the limit here is 20,000)
POOLS_PER_HOST = 2500
#: pools a pool host connects per pass of its loop (all of them within about a second)
_CONNECT_SLICE = 100
FRONT_IDENTITY = "bench-front"
RESULT = pickle.dumps(None, protocol=5)  # what a no-op task returns
FN_DIGEST, FN_BYTES = b"\x01" * 16, b"no-op function"
Proc = subprocess.Popen[str]


def answer(ids: list[int]) -> list[bytes]:
    """A simulated pool's reply to a task batch: one no-op result per task, one message."""
    rows = [v for t in ids for v in (t, 0, OK, len(RESULT), 0)]
    return [encode_header({"k": "results", "n": len(ids)}), pack_ints(rows) + RESULT * len(ids)]


def listen_overflows() -> int:
    """Connections this host's kernel dropped because a listen queue was full (Linux; -1
    elsewhere): each costs its pool a TCP retransmission, 1 s or more."""
    try:
        with open("/proc/net/netstat") as fh:
            rows = [line.split() for line in fh if line.startswith("TcpExt:")]
        return int(rows[1][rows[0].index("ListenOverflows")])
    except (OSError, IndexError, ValueError):
        return -1


def raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# =============================================================================================
# the interchange process: the real serve(), with a timer around its heartbeat step


def interchange_main(stats_path: str) -> int:
    raise_fd_limit()
    from rankpool.interchange import process
    from rankpool.interchange.interchange import Interchange
    try:
        from rankpool.collector import settle_for_service
    except ImportError:  # a build from before it
        def settle_for_service() -> None:
            pass

    beats: list[tuple[float, float, float, int]] = []
    registered: list[float] = []  # when each registration was taken (time.time())
    original, on_register = Interchange.heartbeat, Interchange.on_register

    def timed(self: Interchange) -> None:
        t, c = time.monotonic(), time.thread_time()
        original(self)
        beats.append((t, time.monotonic() - t, time.thread_time() - c, len(self.pools)))

    def noted(self: Interchange, identity: bytes, reg: Register) -> None:
        on_register(self, identity, reg)
        registered.append(time.time())

    Interchange.heartbeat = timed  # type: ignore[method-assign]
    Interchange.on_register = noted  # type: ignore[method-assign]
    baseline = os.environ.get("RANKPOOL_BENCH_MATCH")
    if baseline:  # before/after comparisons of a matching change: match() from another file
        import importlib.util

        from rankpool.interchange import routing as ix_module
        spec = importlib.util.spec_from_file_location("rankpool.interchange._baseline", baseline)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        ix_module.match = module.match  # type: ignore[attr-defined]
    config = process.read_config(sys.stdin)
    try:
        settle_for_service()  # as the interchange's own entry point does
        return process.serve(config, sys.stdout)
    finally:
        with open(stats_path, "w") as fh:
            json.dump({"beats": beats, "registered": registered}, fh)


# =============================================================================================
# a pool host: many simulated pools, one DEALER each, answering at once


class PoolHost:
    """``count`` simulated pools of ``ranks`` ranks in one process, driven by epoll.

    A zmq socket's descriptor only says "look at me": after it fires, and after every send,
    the socket is drained until ``Again`` so no message is left unnoticed; a sweep once per
    heartbeat period checks every socket anyway and counts what it finds (``rescued``).

    Each simulated pool heart-beats as ``RankZero.beat_due`` does: a period after its last
    message once the interchange spoke since then (answering its heartbeat at once), else a
    third of the threshold after it.
    """

    def __init__(self, port: int, first: int, count: int, ranks: int, period: float) -> None:
        self.ctx = zmq.Context()
        self.ctx.MAX_SOCKETS = count + 64
        self.period = period
        self.beat = Heartbeat().encode()
        self.address = f"tcp://127.0.0.1:{port}"
        self.first, self.count, self.ranks = first, count, ranks
        self.socks: list[zmq.Socket[bytes]] = []
        self.by_fd: dict[int, int] = {}
        self.epoll = select.epoll()
        self.last_sent: list[float] = []
        self.heard: list[float] = []  # when each pool last heard from the interchange
        self.fallback = period  # max(period, threshold / 3), once registered
        self.registered = self.stopped = self.rescued = self.answered = 0
        self.rng = random.Random(first)
        self.due: list[tuple[float, int]] = []  # a heap of (next heartbeat, pool)
        self.scheduled: list[float] = []  # each pool's entry in the heap (others are stale)

    def connect_some(self, most: int) -> None:
        """Connect and register up to ``most`` more pools. The host connects its pools a slice
        per loop pass, as fast as it can, so the pools registered first beat from the start
        (as real pools do) while the rest are still connecting."""
        for i in range(len(self.socks), min(self.count, len(self.socks) + most)):
            name = f"sim{self.first + i}"
            sock = self.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.IDENTITY, name.encode())
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.setsockopt(zmq.RCVHWM, 0)
            sock.connect(self.address)
            sock.send_multipart(Register(
                protocol=PROTOCOL_VERSION, rankpool=__version__, python=PYTHON_VERSION,
                block_id=f"b{self.first + i}", pool_id=name, hosts=["simhost"],
                node_ranks=[self.ranks], widest=self.ranks, ranks_per_node=self.ranks).encode())
            fd = sock.getsockopt(zmq.FD)
            self.by_fd[fd] = i
            self.epoll.register(fd, select.EPOLLIN)
            self.socks.append(sock)
            self.last_sent.append(time.monotonic())
            self.heard.append(0.0)
            self.scheduled.append(math.inf)
            if sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:  # asking re-arms the descriptor
                self.drain(i)

    def drain(self, i: int) -> None:
        sock = self.socks[i]
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            header = json.loads(frames[0])
            kind = header["k"]
            now = self.heard[i] = time.monotonic()
            if kind == "tasks":
                ids = task_ids(header, frames[1:])
                sock.send_multipart(answer(ids))
                self.last_sent[i] = now
                self.answered += len(ids)
            elif kind == "heartbeat":
                if now - self.last_sent[i] >= self.period:  # answered at once
                    sock.send_multipart(self.beat)
                    self.last_sent[i] = now
                self.schedule(i)
            elif kind == "registered":
                if header["error"]:
                    raise SystemExit(f"pool sim{i} refused: {header['error']}")
                self.registered += 1
                self.fallback = max(self.period, header["heartbeat_threshold"] / 3)
                # its first heartbeat at a random point of the period, as independent pools
                self.schedule(i, now + self.rng.uniform(0, self.period))
            elif kind in ("stop", "drain"):
                self.stopped += 1

    def due_at(self, i: int) -> float:
        quiet = self.period if self.heard[i] > self.last_sent[i] else self.fallback
        return self.last_sent[i] + quiet

    def schedule(self, i: int, at: float | None = None) -> None:
        """(Re)place pool ``i``'s one live entry in the heap, at ``at`` or when it is due."""
        at = self.due_at(i) if at is None else at
        if at != self.scheduled[i]:
            self.scheduled[i] = at
            heapq.heappush(self.due, (at, i))

    def beat_due(self, now: float) -> None:
        due = self.due
        while due and due[0][0] <= now:
            at, i = heapq.heappop(due)
            if at != self.scheduled[i]:
                continue  # replaced by a later schedule()
            self.scheduled[i] = math.inf
            if self.due_at(i) > now:  # it sent results lately: no heartbeat needed yet
                self.schedule(i)
                continue
            self.socks[i].send_multipart(self.beat)
            self.last_sent[i] = now
            self.schedule(i)
            self.drain(i)

    def sweep(self) -> None:
        for i, sock in enumerate(self.socks):
            if sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                self.rescued += 1
                self.drain(i)

    def run(self, deadline: float) -> None:
        print(f"CONNECTING {time.time()}", flush=True)
        count = self.count
        ready_said = False
        next_sweep = time.monotonic() + self.period
        parent = os.getppid()
        while self.stopped < count and time.monotonic() < deadline:
            if len(self.socks) < count:
                self.connect_some(_CONNECT_SLICE)
            now = time.monotonic()
            wait = 0.05 if not self.due else min(0.05, max(0.0, self.due[0][0] - now))
            if len(self.socks) < count:
                wait = 0.0
            for fd, _ in self.epoll.poll(wait):
                self.drain(self.by_fd[fd])
            now = time.monotonic()
            if self.registered == count and not ready_said:
                print("READY", flush=True)
                ready_said = True
            self.beat_due(now)
            if now >= next_sweep:
                next_sweep = now + self.period
                self.sweep()
                if os.getppid() != parent:
                    break
        print(json.dumps({"answered": self.answered, "rescued": self.rescued,
                          "stopped": self.stopped}), flush=True)
        self.ctx.destroy(linger=0)


def pools_main(port: int, first: int, count: int, ranks: int, period: float, limit: float) -> int:
    raise_fd_limit()
    PoolHost(port, first, count, ranks, period).run(time.monotonic() + limit)
    return 0


# =============================================================================================
# the front-end side
