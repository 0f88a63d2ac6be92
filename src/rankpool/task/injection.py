"""Comm injection: how a task's communicator reaches the user's function.

If the function has a parameter named ``comm``, that parameter receives the task's
communicator when the caller left it out or passed ``None`` for it (by keyword or by
position). Otherwise, if the first positional argument passed is ``None``, it is replaced.
A multi-rank task for a function with neither is an MPI application task: it runs once, on
the first of its ranks (see :mod:`rankpool.mpi_pool.applications`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

#: positional index of ``comm`` (-1: keyword-only), or None when there is no such parameter
_NO_COMM = None


class PerFunction:
    """A bounded memo of one fact about functions, for the submit path.

    Inspecting a signature costs tens of microseconds (more through ``functools.wraps``
    chains); a stream of tasks for one function pays it once. Unhashable callables are
    inspected every time.
    """

    def __init__(self, compute: Callable[[Callable[..., Any]], Any], size: int = 1024) -> None:
        self._compute = compute
        self._size = size
        self._known: dict[Any, Any] = {}

    def __call__(self, fn: Callable[..., Any]) -> Any:
        try:
            return self._known[fn]
        except KeyError:
            pass
        except TypeError:  # unhashable callable
            return self._compute(fn)
        value = self._compute(fn)
        if len(self._known) >= self._size:
            self._known.clear()
        self._known[fn] = value
        return value


def comm_position(fn: Callable[..., Any]) -> int | None:
    """Where a ``comm`` parameter sits: its positional index, -1 if keyword-only, None if absent."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature
        return _NO_COMM
    for index, p in enumerate(params):
        if p.name == "comm":
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                return index
            if p.kind is p.KEYWORD_ONLY:
                return -1
    return _NO_COMM


_comm_position = PerFunction(comm_position)


def inject(position: int | None, args: tuple[Any, ...], kwargs: dict[str, Any],
           comm: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Return ``args, kwargs`` with ``comm`` put where :func:`comm_position` says it goes."""
    if position is not None:
        if "comm" in kwargs:
            if kwargs["comm"] is None:
                kwargs = {**kwargs, "comm": comm}
        elif 0 <= position < len(args):
            if args[position] is None:
                args = (*args[:position], comm, *args[position + 1:])
        else:
            kwargs = {**kwargs, "comm": comm}
    elif args and args[0] is None:
        args = (comm, *args[1:])
    return args, kwargs
