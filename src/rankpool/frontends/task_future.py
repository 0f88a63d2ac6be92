"""The future of one task (:class:`TaskFuture`), as every front-end hands it out.

A ``concurrent.futures.Future`` with the task's id and a label, made lighter for floods of
tens of thousands: the futures of one :class:`~rankpool.frontends.engine.Engine` share one
``Condition``, and hold no list of done-callbacks or waiters until one is needed. Its
``cancel`` asks whoever holds the task (see :mod:`.cancelling`); the engine settles it (see
:mod:`.settling`).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from .cancelling import CANCELLED, confirm_cancel
from .settling import DONE, PLAIN_INIT

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)


#: longest a thread waiting for a result sleeps before it looks for pending signals
_WAKE = 0.25


class TaskFuture(Future[Any]):
    """A ``concurrent.futures.Future`` with the task's id and a writable ``label``.

    Done-callbacks run in the ``contextvars`` context of the ``submit`` call. The futures of one
    executor share one ``Condition`` instead of one each: with tens of thousands of futures in
    flight that halves what creating one costs (the cyclic garbage collector has far fewer
    live objects to walk). ``result`` and ``exception`` therefore wait in a loop until *this*
    future is done. For the same reason a future holds no list of done-callbacks or of
    waiters (``concurrent.futures.wait``, ``as_completed``) until one is added: most never
    get either, and the front-end's collector then walks one object per future, not three.
    """

    def __init__(self, task_id: int, context: contextvars.Context | None = None,
                 condition: threading.Condition | None = None, engine: Engine | None = None,
                 num_ranks: int = 1, results_all: bool = False) -> None:
        if condition is None or not PLAIN_INIT:
            super().__init__()
            if condition is not None:
                self._condition = condition
        else:  # what Future.__init__ does, less the Condition it would make
            self._condition = condition
            self._state = "PENDING"
            self._result = None
            self._exception = None
            # _waiters and _done_callbacks: made when first needed (see below)
        self.task_id = task_id
        self._engine = engine  # told when the future is cancelled
        # the rest only where they differ from the class's defaults (below): a store less
        # per future for each that does not (what settling sets is set above, so that
        # settling adds no attribute)
        if context is not None:
            self._context = context
        if results_all:
            self._results_all = True
        if num_ranks != 1:
            self._num_ranks = num_ranks

    #: what a future starts with, set on the instance where it differs (a flood's futures
    #: share these): the caller's label; the submitting call's context (None: none to carry);
    #: a value per rank; the ranks the task asked for
    label: str | None = None
    _context: contextvars.Context | None = None
    _results_all = False
    _num_ranks = 1
    #: a cancel of its task was asked for (see :mod:`.cancelling`); set on the instance then
    _cancel_asked = False
    #: most futures never get a done-callback: they share this empty tuple instead of holding
    #: a list each, one object less for the garbage collector to walk (see add_done_callback)
    _done_callbacks: list[Callable[[Future[Any]], object]] | tuple[()] = ()
    #: nor a waiter (``concurrent.futures.wait``, ``as_completed``): their list is made when
    #: first asked for (see ``_waiters``); None until then
    _waiter_list: list[Any] | None = None

    @property
    def _waiters(self) -> list[Any]:
        waiters = self._waiter_list
        if waiters is None:
            waiters = self._waiter_list = []
        return waiters

    @_waiters.setter
    def _waiters(self, waiters: list[Any]) -> None:  # Future.__init__ sets it
        self._waiter_list = waiters

    def _wait(self, timeout: float | None) -> None:
        if self._state in DONE:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while self._state not in DONE:
                remaining = _WAKE if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    return
                # in slices: a Ctrl-C that another thread of the process took is acted on
                # (Python runs signal handlers in the main thread once it wakes)
                self._condition.wait(min(remaining, _WAKE))

    def result(self, timeout: float | None = None) -> Any:
        if self._state == "FINISHED" and self._exception is None:
            return self._result  # settled for good (set before the state): no lock needed
        self._wait(timeout)
        return super().result(0)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._wait(timeout)
        return super().exception(0)

    def cancel(self) -> bool:
        """Cancel the task unless it started (RUNNING) or ended; True when it is cancelled, and
        then its function never runs.

        Where the task may already be on its way to a pool, the place that holds it decides:
        this asks it and waits for its answer (see :mod:`.cancelling`); a future whose engine has
        nobody to ask is cancelled here. A cancelled future is CANCELLED_AND_NOTIFIED at once,
        so ``wait`` and ``as_completed`` return it.
        """
        engine = self._engine
        if engine is not None and engine.on_cancel is not None:
            return confirm_cancel(engine, self)
        if not self._set_cancelled():
            return self._state in CANCELLED
        if engine is not None:
            engine.cancelled(self)
        return True

    def _set_cancelled(self) -> bool:
        """PENDING → CANCELLED_AND_NOTIFIED, waiters and callbacks told; False if not PENDING."""
        with self._condition:
            if self._state != "PENDING":
                return False
            self._state = "CANCELLED_AND_NOTIFIED"
            for waiter in self._waiter_list or ():
                waiter.add_cancelled(self)
            self._condition.notify_all()
        # Future's own helper (the stubs leave its private methods out)
        self._invoke_callbacks()  # type: ignore[attr-defined]
        return True

    def add_done_callback(self, fn: Callable[[Future[Any]], object]) -> None:
        """Run ``fn(future)`` once it is done; whatever it raises (``SystemExit`` included) is
        logged and dropped: it runs on the thread that settles every future."""
        ctx = self._context
        if not isinstance(self._done_callbacks, list):
            with self._condition:
                if not isinstance(self._done_callbacks, list):
                    self._done_callbacks = []
        if ctx is None:  # the submitter's context was empty: run in an empty one
            super().add_done_callback(lambda f: _guarded(contextvars.Context(), fn, f))
        else:
            super().add_done_callback(lambda f: _guarded(ctx, fn, f))

    def __repr__(self) -> str:
        label = f" label={self.label!r}" if self.label else ""
        return f"<TaskFuture task_id={self.task_id}{label} state={self._state}>"




def _guarded(ctx: contextvars.Context, fn: Callable[[Future[Any]], object],
             future: Future[Any]) -> None:
    """A done-callback, run so that nothing it raises reaches the settling thread."""
    try:
        ctx.run(fn, future)
    except BaseException:  # SystemExit or KeyboardInterrupt would end that thread
        log.exception("done-callback %r of %r raised; ignored", fn, future)
