"""The message handlers under fuzz, run in-process on fake sockets, and what counts as a failure.

Three targets, each fed one :class:`~fuzz_messages.Case` at a time:

* :class:`InterchangeTarget`: a real :class:`~rankpool.interchange.Interchange` whose three
  ROUTER sockets are :class:`FakeSocket` objects. A case goes through the loop's own
  ``_drain`` step, then the loop's periodic steps run (dispatch, liveness, heartbeat). It starts
  with a front-end, two registered pools and tasks in flight, so results have somewhere to go.
* :class:`PoolTarget`: a :class:`~rankpool.mpi_pool.pool.PoolManager` built without MPI (a
  fake manager, a fake DEALER); a case goes through its ``pool_receive`` step.
* :class:`ClientTarget`: the front-end's :class:`~rankpool.executor.client.InterchangeClient`
  receive step, with recording callbacks.

A *finding* is: an exception leaving a handler or loop step (other than the pool's orderly
``PoolLeaves`` on a Stop), a log record at ERROR or with a traceback (the interchange's
``_drain`` logs unexpected exceptions with ``log.exception``), a case that takes longer than
``HANG_S``, an interchange whose bookkeeping no longer adds up, or a message it sends that the
receiving side would drop (a dropped result batch leaves its futures pending for ever).
Findings that match a bug already reported (:data:`KNOWN`) are counted apart.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import zmq

from rankpool.errors import ProtocolError
from rankpool.executor.client import InterchangeClient
from rankpool.interchange import Interchange, InterchangeConfig
from rankpool.interchange.frontend import FrontEnd
from rankpool.mpi_pool.config import PoolConfig
from rankpool.resources import Spec
from rankpool.protocol import (Lost, Refused, Result, Task, decode_header, decode_message,
                               decode_results, decode_tasks, encode_tasks)

from fuzz_messages import Case, Mutator, as_bytes, corpus, register, task

#: a case that runs longer than this is a hang
HANG_S = 5.0

#: bugs found by this fuzzer in code it may not fix, by name (see docs/reliability.md)
KNOWN = {
    "json-recursion": "wire.decode_header lets json's RecursionError out for a deeply nested "
                      "header (it catches only ValueError and UnicodeDecodeError)",
    "spec-overflow": "resources.parse_spec calls math.isfinite on a huge integer walltime, "
                     "which raises OverflowError instead of ResourceSpecError",
    "forwarded-bad-results": "batches.check_results passes result batches that decode_results "
                             "refuses; the interchange forwards them, the front-end drops them "
                             "and their futures never end",
}


class Hang(Exception):
    """A case ran past HANG_S."""


@contextmanager
def deadline(seconds: float = HANG_S) -> Iterator[None]:
    """Raise :class:`Hang` in this (main) thread after ``seconds``; a no-op in other threads."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _alarm(signum: int, frame: Any) -> None:
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def known_bug(exc: BaseException) -> str:
    """The :data:`KNOWN` name of an exception's bug, or ""."""
    names = {f.name for f in traceback.extract_tb(exc.__traceback__)}
    if isinstance(exc, RecursionError) and "decode_header" in names:
        return "json-recursion"
    if isinstance(exc, OverflowError) and "parse_spec" in names:
        return "spec-overflow"
    return ""


@dataclass
class Finding:
    target: str
    kind: str
    detail: str
    case: Case
    known: str = ""

    def __str__(self) -> str:
        frames = ", ".join(repr(f[:120]) + (f"...({len(f)} bytes)" if len(f) > 120 else "")
                           for f in self.case.frames)
        tag = f" [known: {self.known}]" if self.known else ""
        return (f"{self.target}: {self.kind}{tag}: {self.detail}\n  channel {self.case.channel}, "
                f"identity {self.case.identity!r}, made by: {self.case.how}\n  frames: [{frames}]")


@dataclass
class Report:
    """What a fuzz run did: cases per target and channel, outcomes, findings."""

    cases: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def add(self, finding: Finding) -> None:
        key = f"{finding.target}/{finding.kind}/{finding.known or finding.detail[:60]}"
        self.counts[key] += 1
        if self.counts[key] <= 3:  # a few examples of each
            self.findings.append(finding)

    @property
    def unknown(self) -> list[Finding]:
        """Findings that fail a test: all but known bugs (``RANKPOOL_FUZZ_STRICT=1``: all;
        ``=name,name``: those known bugs too)."""
        strict = os.environ.get("RANKPOOL_FUZZ_STRICT", "")
        names = set(KNOWN) if strict == "1" else set(strict.split(","))
        return [f for f in self.findings if not f.known or f.known in names]

    def summary(self) -> str:
        lines = [f"{sum(self.cases.values())} cases in {self.seconds:.1f} s: {dict(self.cases)}",
                 f"outcomes: {dict(self.outcomes)}"]
        lines += [f"finding x{n}: {k}" for k, n in sorted(self.counts.items())]
        return "\n".join(lines)


class Capture(logging.Handler):
    """Keeps the records that count as failures, and counts the warnings."""

    def __init__(self, allowed: tuple[str, ...] = ()) -> None:
        super().__init__(logging.WARNING)
        self.allowed = allowed
        self.bad: list[logging.LogRecord] = []
        self.warnings = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            if record.exc_info or not record.getMessage().startswith(self.allowed):
                self.bad.append(record)
                return
        self.warnings += 1


@contextmanager
def captured(allowed: tuple[str, ...] = ()) -> Iterator[Capture]:
    """Route rankpool's records to a :class:`Capture` only (not to pytest's 100,000-line log)."""
    logger = logging.getLogger("rankpool")
    cap = Capture(allowed)
    old = logger.level, logger.propagate
    logger.addHandler(cap)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield cap
    finally:
        logger.removeHandler(cap)
        logger.setLevel(old[0])
        logger.propagate = old[1]


class FakeSocket:
    """A ZeroMQ socket's receive queue and send side; sends fail now and then when asked."""

    def __init__(self, rng: random.Random | None = None, fail: float = 0.0) -> None:
        self.inbox: deque[list[bytes]] = deque()
        self.sent: list[list[bytes]] = []
        self.rng, self.fail = rng, fail

    def recv_multipart(self, flags: int = 0, copy: bool = True) -> list[Any]:
        if not self.inbox:
            raise zmq.Again()
        frames = self.inbox.popleft()
        return frames if copy else [zmq.Frame(f) for f in frames]

    def send_multipart(self, frames: list[Any], flags: int = 0, copy: bool = True) -> None:
        if self.rng is not None and self.rng.random() < self.fail:
            raise zmq.ZMQError(zmq.EHOSTUNREACH)
        self.sent.append([f.bytes if isinstance(f, zmq.Frame) else bytes(f) for f in frames])

    def poll(self, timeout: int | None = None, flags: int = zmq.POLLIN) -> int:
        return zmq.POLLIN if self.inbox else 0


def receivable(frames: list[bytes]) -> str:
    """Why the receiving side of an interchange message would drop it ("" if it would not)."""
    try:
        header = decode_header(frames[0])
        kind = header["k"]
        if kind == "results":
            decode_results(header, frames[1:])
        elif kind == "tasks":
            decode_tasks(header, frames[1:], copy=True)
        else:
            if len(frames) != 1:
                return f"{kind!r} message with {len(frames) - 1} extra frames"
            decode_message(header)
    except ProtocolError as exc:
        return str(exc)
    return ""


# -- the interchange -----------------------------------------------------------------------------------
class InterchangeTarget:
    """An interchange on fake sockets, rebuilt every ``reset_every`` cases or when it stops."""

    POOLS = (("p0", "b0", (4,)), ("p1", "b1", (2, 2)))

    def __init__(self, seed: int, reset_every: int = 300) -> None:
        self.rng = random.Random(seed)
        self.mutator = Mutator(seed)
        self.reset_every = reset_every
        self.fed = 0
        self.reset()

    def reset(self) -> None:
        ix = self.ix = Interchange(InterchangeConfig(front_identity="front",
                                                     heartbeat_period=1e4,
                                                     heartbeat_threshold=1e5))
        ix._pool_sock = self.pool_sock = FakeSocket(self.rng, 0.0)  # type: ignore[assignment]
        ix._client_sock = self.client_sock = FakeSocket()  # type: ignore[assignment]
        ix._command_sock = self.command_sock = FakeSocket()  # type: ignore[assignment]
        ix.front = FrontEnd(self.client_sock, ix._throttle)  # type: ignore[arg-type]
        ix.ports = (1, 2, 3)
        self.steps = {"pool": ("pool", self.pool_sock, ix.on_pool_message),
                      "client": ("front-end", self.client_sock, ix.on_client_message),
                      "command": ("command", self.command_sock, ix.on_command_message)}
        self.deliver("client", b"front", [b'{"k":"heartbeat"}'])
        for pool_id, block_id, ranks in self.POOLS:
            self.deliver("pool", pool_id.encode(), register(pool_id, block_id, ranks))
        self.deliver("client", b"front", as_bytes(encode_tasks([task(i) for i in range(1, 21)])))
        ix.dispatch()
        in_flight = sorted(i for p in ix.pools for i in p.in_flight)
        self.corpus = corpus(in_flight)
        self.others = [f for msgs in self.corpus.values() for f in msgs]
        for sock in (self.pool_sock, self.client_sock, self.command_sock):
            sock.sent.clear()
        self.pool_sock.fail = 0.02  # now and then a pool has gone: dispatch must cope

    def deliver(self, channel: str, identity: bytes, frames: list[bytes]) -> None:
        name, sock, handler = self.steps[channel]
        sock.inbox.append([identity, *frames])
        self.ix._now = time.monotonic()
        self.ix._drain(name, sock, handler)  # type: ignore[arg-type]

    def case(self) -> Case:
        rng = self.rng
        channel = rng.choices(("pool", "client", "command"), (45, 35, 20))[0]
        frames, how = self.mutator.case(self.corpus[channel], self.others)
        roll = rng.random()
        if channel == "pool":
            ids = [p.identity for p in self.ix.pools] or [b"p0"]
            identity = rng.choice(ids) if roll < 0.8 else b"front" if roll < 0.85 \
                else rng.randbytes(rng.randint(1, 12))
        elif channel == "client":
            identity = b"front" if roll < 0.9 else rng.randbytes(rng.randint(1, 12))
        else:
            identity = rng.randbytes(5)
        return Case(channel, identity, frames, how)

    def feed(self, case: Case, report: Report) -> None:
        """Deliver one case, run the loop's periodic steps, and check what came of it."""
        ix = self.ix
        report.cases[f"interchange/{case.channel}"] += 1
        try:
            with deadline():
                self.deliver(case.channel, case.identity, case.frames)
                if ix._dirty and not ix._done:
                    ix.dispatch()
                ix._now = time.monotonic()
                ix.check_liveness()
                if self.fed % 10 == 0:
                    ix.heartbeat()
        except Exception as exc:
            kind = "hang" if isinstance(exc, Hang) else "exception escaped the loop"
            report.add(Finding("interchange", kind, repr(exc)[:300], case, known_bug(exc)))
        self.check(case, report)
        self.fed += 1
        if ix._done or self.fed % self.reset_every == 0:
            report.outcomes["interchange stopped" if ix._done else "interchange reset"] += 1
            self.reset()

    def check(self, case: Case, report: Report) -> None:
        """Bookkeeping adds up, and everything sent out would be received."""
        ix = self.ix
        try:
            queued = {t.task_id for level in ix.queue._levels.values()
                      for dq in level.values() for _, t in dq}
            count = sum(len(dq) for level in ix.queue._levels.values() for dq in level.values())
            flying: set[int] = set()
            for pool in ix.pools:
                assert pool.used == sum(pool.in_flight.values()) >= 0, \
                    f"pool {pool.pool_id!r}: used {pool.used} != in flight {pool.in_flight}"
                assert not flying & set(pool.in_flight), "a task in flight on two pools"
                flying |= set(pool.in_flight)
            assert count == len(ix.queue), f"queue length {len(ix.queue)} != {count} entries"
            assert ix.known == queued | flying, \
                f"known - (queued | in flight) = {sorted(ix.known - queued - flying)[:5]}, " \
                f"(queued | in flight) - known = {sorted((queued | flying) - ix.known)[:5]}"
        except AssertionError as exc:
            report.add(Finding("interchange", "bookkeeping", str(exc), case))
        for sock, to in ((self.client_sock, "front-end"), (self.pool_sock, "pool")):
            for out in sock.sent:
                why = receivable(out[1:])
                if why:
                    as_is = out[1:] == case.frames
                    report.add(Finding(
                        "interchange", f"sent the {to} a message it drops", why, case,
                        "forwarded-bad-results" if as_is and to == "front-end" else ""))
            report.outcomes[f"messages to the {to}"] += len(sock.sent)
            sock.sent.clear()
        self.command_sock.sent.clear()


# -- the pool's manager ----------------------------------------------------------------------------------
class FakeManager:
    """Takes tasks as the MPI manager would, checking that each is well-formed."""

    def __init__(self) -> None:
        self.outstanding = 0

    def submit(self, t: Task) -> None:
        assert type(t.task_id) is int and isinstance(t.spec, Spec) and t.spec.num_ranks >= 1
        assert isinstance(t.fn_digest, bytes) and isinstance(t.fn, bytes)
        assert isinstance(t.data, bytes) and all(len(memoryview(b)) >= 0 for b in t.buffers)
        self.outstanding += 1


class PoolTarget:
    """Rank 0's ``pool_receive`` step on a fake DEALER, without MPI."""

    def __init__(self, seed: int) -> None:
        from rankpool.mpi_pool.pool import PoolManager  # mpi4py: imported only when fuzzed
        self.rng = random.Random(seed)
        self.mutator = Mutator(seed)
        pm = self.pm = object.__new__(PoolManager)
        pm.cfg = PoolConfig(interchange="tcp://127.0.0.1:1", block_id="b0")
        pm.manager = FakeManager()  # type: ignore[assignment]
        pm.draining = False
        pm.sock = self.sock = FakeSocket()  # type: ignore[assignment]
        pm.period, pm.threshold = 2.0, 10.0
        pm.last_heard = pm.last_sent = time.monotonic()
        pm.first_done = 0.0
        self.corpus = corpus([1, 2, 3])
        self.others = [f for msgs in self.corpus.values() for f in msgs]

    def case(self) -> Case:
        frames, how = self.mutator.case(self.corpus["to_pool"], self.others)
        return Case("to_pool", b"", frames, how)

    def feed(self, case: Case, report: Report) -> None:
        from rankpool.mpi_pool.pool import PoolLeaves
        report.cases["pool/to_pool"] += 1
        self.sock.inbox.append(case.frames)
        try:
            with deadline():
                self.pm.pool_receive(0)
        except PoolLeaves:
            report.outcomes["pool told to stop"] += 1
            try:
                assert decode_header(case.frames[0])["k"] == "stop"
            except Exception:
                report.add(Finding("pool", "left without a Stop", "", case))
        except Exception as exc:
            kind = "hang" if isinstance(exc, Hang) else "exception escaped pool_receive"
            report.add(Finding("pool", kind, repr(exc)[:300], case, known_bug(exc)))
        finally:
            self.sock.inbox.clear()
            self.pm.draining = False


# -- the front-end's client --------------------------------------------------------------------------------
class ClientTarget:
    """The front-end's receive step (an escaping exception would break the executor)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.mutator = Mutator(seed)
        c = self.client = object.__new__(InterchangeClient)
        c.sock = self.sock = FakeSocket()  # type: ignore[assignment]
        c.last_heard = 0.0
        c.on_results = self._results  # type: ignore[method-assign]
        c.on_lost = lambda msg: self._expect(msg, Lost)  # type: ignore[method-assign]
        c.on_refused = lambda msg: self._expect(msg, Refused)  # type: ignore[method-assign]
        self.corpus = corpus([1, 2, 3])
        self.others = [f for msgs in self.corpus.values() for f in msgs]

    @staticmethod
    def _results(results: list[Result]) -> None:
        assert all(isinstance(r, Result) and type(r.task_id) is int and r.outcomes for r in results)

    @staticmethod
    def _expect(msg: Any, cls: type) -> None:
        assert isinstance(msg, cls)

    def case(self) -> Case:
        frames, how = self.mutator.case(self.corpus["to_front"], self.others)
        return Case("to_front", b"", frames, how)

    def feed(self, case: Case, report: Report) -> None:
        report.cases["client/to_front"] += 1
        self.sock.inbox.append(case.frames)
        try:
            with deadline():
                self.client._receive()
        except Exception as exc:
            kind = "hang" if isinstance(exc, Hang) else "exception escaped the client's receive"
            report.add(Finding("client", kind, repr(exc)[:300], case, known_bug(exc)))
        finally:
            self.sock.inbox.clear()


#: records the client logs at ERROR on purpose (a refused pool is the user's business)
CLIENT_ERRORS = ("the interchange refused pool",)


def run(target: Any, n: int, report: Report, allowed: tuple[str, ...] = ()) -> Report:
    """Feed ``n`` generated cases to ``target``; log records that count as failures too."""
    start = time.monotonic()
    name = getattr(target, "name", "") or type(target).__name__.removesuffix("Target").lower()
    with captured(allowed) as cap:
        for _ in range(n):
            case = target.case()
            before = len(cap.bad)
            target.feed(case, report)
            for record in cap.bad[before:]:
                exc = record.exc_info[1] if record.exc_info else None
                report.add(Finding(name, f"logged at {record.levelname}",
                                   record.getMessage()[:200] + (f": {exc!r:.200}" if exc else ""),
                                   case, known_bug(exc) if exc else ""))
            del cap.bad[before:]
        report.outcomes[f"{name} warnings"] += cap.warnings
    report.seconds += time.monotonic() - start
    return report
