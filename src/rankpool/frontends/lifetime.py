"""How long an executor's pools live: until it is shut down, dropped, or the program ends.

As ``concurrent.futures`` promises for its own executors (``Executor`` and, on its root,
``CommExecutor``):

* an executor nobody references any more shuts down as ``shutdown(wait=False)`` would (its
  threads hold it only weakly: see :func:`weak`);
* when the interpreter exits, every executor not yet closed first waits for its pending
  futures, whatever ``wait`` its ``shutdown`` had, and then stops its pools and its
  interchange (a ``CommExecutor``: its worker ranks, before ``MPI_Finalize``), so that
  nothing outlives the program. This runs from
  ``threading._register_atexit``: before ``atexit`` hooks and while daemon threads (the
  client's) still run;
* from then on ``submit`` raises ``RuntimeError`` (:func:`check_not_exiting`).

A :class:`Closer` holds what closing needs (never the executor itself) and runs it once, in a
thread named ``rankpool-shutdown``.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_exiting = False
_live: dict[int, Closer] = {}
_live_lock = threading.Lock()


def check_not_exiting() -> None:
    if _exiting:
        raise RuntimeError("cannot schedule new futures after interpreter shutdown")


class Closer:
    """Runs ``close`` once: when asked (:meth:`close`), or at the interpreter's exit."""

    def __init__(self, close: Callable[[], None]) -> None:
        self._close = close
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        with _live_lock:
            _live[id(self)] = self

    def close(self, wait: bool = True) -> None:
        """Start closing (once); with ``wait``, return when it is done."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rankpool-shutdown",
                                                daemon=True)
                self._thread.start()
        if wait:
            self._done.wait()

    def _run(self) -> None:
        try:
            self._close()
        except Exception:  # a bug: the exit must go on
            log.exception("closing an executor failed")
        finally:
            with _live_lock:
                _live.pop(id(self), None)
            self._done.set()


def close_when_dropped(owner: object, closer: Closer,
                       before: Callable[[], None] | None = None) -> None:
    """Close (without waiting) once ``owner`` is garbage-collected; ``before``, if given, runs
    first (it must not hold ``owner`` either)."""
    weakref.finalize(owner, _dropped, closer, before).atexit = False


def _dropped(closer: Closer, before: Callable[[], None] | None) -> None:
    if before is not None:
        before()
    closer.close(False)


def weak(method: Callable[..., Any]) -> Callable[..., Any]:
    """A bound method that does not keep its object alive (a no-op once it is gone)."""
    ref = weakref.WeakMethod(method)

    def call(*args: Any) -> Any:
        target = ref()
        return None if target is None else target(*args)
    return call


def _at_exit() -> None:
    global _exiting
    _exiting = True
    with _live_lock:
        closers = list(_live.values())
    for closer in closers:
        closer.close(wait=True)


# CPython's hook that runs before non-daemon threads are joined (private, not in the stubs)
threading._register_atexit(_at_exit)  # type: ignore[attr-defined]
