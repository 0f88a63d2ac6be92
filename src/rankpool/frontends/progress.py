"""Progress display for waits on many futures: a small text bar with done and failed counts.

Nothing here is on unless called: rankpool never draws progress by itself. Wrap a wait::

    for future in rankpool.frontends.progress.as_completed(futures, label="tasks"):
        ...                                         # the bar redraws as futures finish
    done, failed = rankpool.frontends.progress.wait(futures)  # block until all finish; the counts
    results = list(rankpool.frontends.progress.map(executor, fn, items))  # like Executor.map

Any ``concurrent.futures.Future`` works, Parsl ``AppFuture`` objects included (they are
``Future`` subclasses). The bar goes to stderr, so a script's results on stdout stay clean.
On a terminal it redraws one line in place with ``\\r``; elsewhere (a batch job's output
file, a pipe) it prints a line now and then (at each quarter of the total and at least every
``interval`` seconds) and always one at the end, so logs stay short and readable. It has no
dependency beyond the standard library.
"""

from __future__ import annotations

import concurrent.futures
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, NamedTuple, TextIO, TypeVar

from .cancelling import cancel_all

__all__ = ["Counts", "Progress", "as_completed", "map", "wait"]

#: a terminal bar is redrawn at most this often (seconds)
REDRAW = 0.1
#: without a terminal, a line is printed at least this often (seconds)
INTERVAL = 30.0

_P = TypeVar("_P", bound="Progress")


class Counts(NamedTuple):
    """How finished futures ended: ``done`` with a result, ``failed`` raised or cancelled."""

    done: int
    failed: int


def failed(future: Future[Any]) -> bool:
    """Whether a finished future ended without a result (it raised or was cancelled)."""
    return future.cancelled() or future.exception() is not None


class Progress:
    """A progress bar over ``total`` items, counting done and failed ones; thread-safe.

    ``stream`` defaults to ``sys.stderr``; ``show=False`` keeps the counts but draws nothing
    (one switch for scripts that offer a ``--quiet``); ``clock`` is for tests.
    """

    def __init__(self, total: int, *, label: str = "tasks", stream: TextIO | None = None,
                 show: bool = True, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if total < 0:
            raise ValueError(f"total must not be negative, got {total!r}")
        self.total = total
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.show = show
        self.interval = interval
        self.clock = clock
        self.done = 0
        self.failed = 0
        self.closed = False
        self._lock = threading.Lock()
        self._start = clock()
        self._last = -float("inf")
        self._quarter = 0  # quarters of the total already announced (non-terminal output)
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())

    @property
    def counts(self) -> Counts:
        return Counts(self.done, self.failed)

    def update(self, ok: bool = True) -> None:
        """Count one finished item; redraw if it is time to."""
        with self._lock:
            if self.closed:
                return
            if ok:
                self.done += 1
            else:
                self.failed += 1
            self._maybe_draw()

    def add(self, future: Future[Any]) -> None:
        """Count ``future`` when it finishes, from whichever thread finishes it."""
        future.add_done_callback(lambda f: self.update(not failed(f)))

    def close(self) -> None:
        """Draw the final state (ending the terminal line); later updates are ignored."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self.show:
                self._write(self._text(), final=True)

    def __enter__(self: _P) -> _P:
        if self.show and self.tty:
            with self._lock:
                self._write(self._text(), final=False)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- drawing ------------------------------------------------------------------------------
    def _maybe_draw(self) -> None:
        if not self.show:
            return
        now = self.clock()
        if self.tty:
            if now - self._last >= REDRAW:
                self._write(self._text(), final=False)
            return
        finished = self.done + self.failed
        if finished >= self.total:
            return  # the last line is close()'s
        quarter = 4 * finished // self.total
        if quarter > self._quarter or now - self._last >= self.interval:
            self._quarter = quarter
            self._write(self._text(), final=False)

    def _write(self, text: str, *, final: bool) -> None:
        self._last = self.clock()
        if self.tty:
            width = shutil.get_terminal_size((80, 24)).columns - 1
            self.stream.write("\r" + text[:width].ljust(width) + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _text(self) -> str:
        finished = self.done + self.failed
        elapsed = self.clock() - self._start
        counts = f"{self.label}: {finished}/{self.total}, {self.done} done, {self.failed} failed"
        if self.tty:
            size = 24
            filled = size * finished // self.total if self.total else size
            return f"[{'#' * filled}{'.' * (size - filled)}] {counts} ({elapsed:.1f} s)"
        percent = 100 * finished // self.total if self.total else 100
        return f"{counts} ({percent}%, {elapsed:.1f} s)"


def as_completed(futures: Iterable[Future[Any]], *, label: str = "tasks",
                 timeout: float | None = None, stream: TextIO | None = None,
                 show: bool = True) -> Iterator[Future[Any]]:
    """``concurrent.futures.as_completed`` that draws a bar as the futures finish.

    The bar ends when the loop does (even by ``break`` or an exception) and shows what had
    finished by then; ``timeout`` raises ``TimeoutError`` as the standard function does.
    """
    pending = list(futures)
    with Progress(len(pending), label=label, stream=stream, show=show) as bar:
        for future in concurrent.futures.as_completed(pending, timeout=timeout):
            bar.update(not failed(future))
            yield future


def wait(futures: Iterable[Future[Any]], *, label: str = "tasks", timeout: float | None = None,
         stream: TextIO | None = None, show: bool = True) -> Counts:
    """Wait for every future with a bar; return how many ended ``done`` and ``failed``.

    Failures are counted, not raised: look at each future for its exception.
    """
    counts = [0, 0]
    for future in as_completed(futures, label=label, timeout=timeout, stream=stream, show=show):
        counts[failed(future)] += 1
    return Counts(*counts)


def map(executor: concurrent.futures.Executor, fn: Callable[..., Any], *iterables: Iterable[Any],
        label: str = "tasks", timeout: float | None = None, stream: TextIO | None = None,
        show: bool = True) -> Iterator[Any]:
    """``executor.map(fn, *iterables)`` with a bar: results in input order, the bar counting
    tasks as they finish in any order.

    Every task is submitted first, as ``Executor.map`` does; the first failed task's exception
    is raised when its turn comes, and leaving the loop early cancels the tasks not started.
    Works with any ``concurrent.futures`` executor (for Parsl, wrap the app futures with
    :func:`as_completed` instead).
    """
    futures = [executor.submit(fn, *args) for args in zip(*iterables)]
    deadline = None if timeout is None else time.monotonic() + timeout
    bar = Progress(len(futures), label=label, stream=stream, show=show)
    return _ordered(futures, bar, deadline)


def _ordered(futures: list[Future[Any]], bar: Progress,
             deadline: float | None) -> Iterator[Any]:
    with bar:
        for future in futures:
            bar.add(future)
        try:
            for future in futures:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                yield future.result(remaining)
        finally:  # as Executor.map: a loop left early (or a failure) cancels what has not started
            cancel_all(futures)
