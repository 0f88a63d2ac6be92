"""How messages word counts and the ends of processes."""

from __future__ import annotations

from collections.abc import Iterable


def describe_exit(status: int | None) -> str:
    """How a process ended, from ``os.waitstatus_to_exitcode``'s value (negative: a signal)."""
    if status is None:
        return "ended in a way nobody saw"
    if status < 0:
        import signal
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = "an unknown signal"
        return f"was killed by signal {-status} ({name})"
    return f"exited with status {status}"


def describe_exits(statuses: Iterable[int]) -> str:
    """How a group of processes ended, from the exit statuses that could be read ("ended"
    when none could)."""
    codes = sorted(set(statuses))
    if len(codes) == 1:
        return describe_exit(codes[0])
    return "ended (" + ", ".join(map(describe_exit, codes)) + ")" if codes else "ended"


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1 (``1 usable worker rank``, ``3 ranks``)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
