"""What counts as a fuzz failure, and the loop that feeds cases to a target.

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
import signal
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fuzz_messages import Case

from rankpool.errors import ProtocolError
from rankpool.protocol.batches import decode_tasks
from rankpool.protocol.messages import decode_message
from rankpool.protocol.result_batches import decode_results
from rankpool.protocol.wire import decode_header

#: a case that runs longer than this is a hang
HANG_S = 5.0

#: bugs found by this fuzzer in code it may not fix, by name (see docs/reliability.md)
# Bugs the fuzzer has found and that are reported but not fixed yet: name -> (description,
# exception type, function in whose frame it is raised). Findings that match are counted apart.
# The three findings of the first campaign (json-recursion, spec-overflow, forwarded-bad-results)
# are fixed; their reproducers stay in test_fuzz_findings.py as regressions.
KNOWN: dict[str, tuple[str, type[BaseException], str]] = {}


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
    for name, (_, kind, where) in KNOWN.items():
        if isinstance(exc, kind) and where in names:
            return name
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


# -- the interchange -------------------------------------------------------------------------------
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
