"""Waiting without burning the node.

MPICH ranks blocked in any MPI wait spin at 100 % CPU, so idle ranks poll with ``Iprobe`` and
sleep in between. The sleep doubles from ``base`` up to ``hot_cap`` while the rank saw activity
recently (a busy pool keeps its latency) and up to ``idle_cap`` once it has been idle for
``hot_window`` seconds (an idle pool costs almost nothing). Any activity resets it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import time
from dataclasses import dataclass

_PR_SET_TIMERSLACK = 29


def tighten_timer_slack(ns: int = 1000) -> None:
    """Make short sleeps of this thread precise (Linux: 50 µs slack by default)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_TIMERSLACK, ctypes.c_ulong(ns), 0, 0, 0)
    except (OSError, AttributeError):
        pass


@dataclass(frozen=True, slots=True)
class BackoffConfig:
    base: float = 10e-6
    hot_cap: float = 100e-6
    idle_cap: float = 10e-3
    hot_window: float = 0.05

    def __post_init__(self) -> None:
        for name in ("base", "hot_cap", "idle_cap", "hot_window"):
            if not getattr(self, name) > 0:
                raise ValueError(f"backoff {name} must be positive, got {getattr(self, name)!r}")
        if not self.base <= self.hot_cap <= self.idle_cap:
            raise ValueError("backoff needs base <= hot_cap <= idle_cap")


class Backoff:
    """Exponential sleep between polls, reset by :meth:`reset` on activity."""

    __slots__ = ("cfg", "delay", "last_active")

    def __init__(self, cfg: BackoffConfig | None = None) -> None:
        self.cfg = cfg or BackoffConfig()
        self.delay = self.cfg.base
        self.last_active = time.monotonic()

    def reset(self) -> None:
        self.delay = self.cfg.base
        self.last_active = time.monotonic()

    def next_delay(self) -> float:
        """The next sleep length, advancing the back-off."""
        cfg = self.cfg
        delay = self.delay
        cap = cfg.hot_cap if time.monotonic() - self.last_active < cfg.hot_window else cfg.idle_cap
        self.delay = min(delay * 2, cap)
        return min(delay, cap)

    def sleep(self) -> None:
        time.sleep(self.next_delay())
