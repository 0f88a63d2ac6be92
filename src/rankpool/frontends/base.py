"""``concurrent.futures`` over the engine: the base of ``Executor`` and ``CommExecutor``, and
the views ``requirements(...)`` returns (see :mod:`rankpool.frontends.engine`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor
from typing import Any

from ..protocol.batches import TaskRow
from ..shm.plane import FrontEndPlane
from ..task.resources import Spec, parse_spec
from .cancelling import cancel_all
from .engine import Engine
from .lifetime import check_not_exiting
from .mapping import map_calls
from .task_future import TaskFuture

log = logging.getLogger(__name__)


class _Submitter(Executor):
    """Shared ``submit``/``requirements`` for front-ends and their views."""

    _default: Spec

    def requirements(self, **spec: Any) -> RequirementsView:
        """A view on the same pool that submits with these resource requirements."""
        return RequirementsView(self._front(), parse_spec(spec))

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskFuture:
        return self._front()._submit(fn, args, kwargs, self._default)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
            timeout: float | None = None, chunksize: int = 1,
            unordered: bool = False) -> Iterator[Any]:
        """``fn`` over the items of ``iterables``, every call submitted now, ``chunksize``
        calls per task; results in order, or as they complete with ``unordered``
        (see :mod:`rankpool.frontends.mapping`)."""
        if len(iterables) == 1:
            return map_calls(self.submit, fn, iterables[0], timeout, chunksize, unordered,
                             spread=False)
        return map_calls(self.submit, fn, zip(*iterables), timeout, chunksize, unordered)

    def starmap(self, fn: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                timeout: float | None = None, chunksize: int = 1,
                unordered: bool = False) -> Iterator[Any]:
        """:meth:`map` with each item of ``iterable`` the arguments of one call."""
        return map_calls(self.submit, fn, map(tuple, iterable), timeout, chunksize, unordered)

    def _front(self) -> FrontEnd:
        raise NotImplementedError


class FrontEnd(_Submitter):
    """Base of ``CommExecutor`` and ``Executor``: ``concurrent.futures`` over the engine.

    A subclass implements ``_send(task, future)`` (hand the task on towards a pool),
    ``_check_spec(spec)`` (refuse at submit what no pool of it can hold) and ``shutdown``.
    """

    def __init__(self, requirements: Mapping[str, Any] | None = None) -> None:
        self._default = parse_spec(requirements)
        self._engine = Engine()
        self._lock = self._engine.lock
        self._shutdown = False

    @property
    def _broken(self) -> BaseException | None:
        """The latch's error (a :class:`~rankpool.errors.BrokenPool`), None while not broken."""
        return self._engine.broken

    @property
    def _plane(self) -> FrontEndPlane | None:
        """Shared memory for large buffers, when on."""
        return self._engine.plane

    def _front(self) -> FrontEnd:
        return self

    def _check_spec(self, spec: Spec) -> None:
        """Refuse at submit a task no pool of this executor can ever hold (override)."""

    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                spec: Spec) -> TaskFuture:
        if not callable(fn):
            raise TypeError(f"submit needs a callable, got {type(fn).__name__}")
        engine = self._engine
        if engine.broken is not None:
            raise engine.broken
        if self._shutdown:
            raise RuntimeError("cannot submit after shutdown")
        check_not_exiting()
        self._check_spec(spec)
        task, future = engine.task(fn, args, kwargs, spec)
        self._send(task, future)
        return future

    def _send(self, task: TaskRow, future: TaskFuture) -> None:
        raise NotImplementedError

    def _set_broken(self, message: str, cause: BaseException | None = None) -> None:
        """The latch: record the cause once, fail every pending future, make submit raise."""
        self._engine.break_down(message, cause)

    @property
    def pending(self) -> int:
        """Futures not resolved yet."""
        return len(self._engine.futures)

    def __enter__(self) -> Any:
        return self


class RequirementsView(_Submitter):
    """The same pool, submitting with other default requirements.

    Leaving a view's ``with`` block (its ``shutdown``) waits for the futures submitted through
    it; the pool itself keeps running, those futures stay valid, and the view can still submit
    (it is a handle, not a resource): only the executor's own ``shutdown`` stops the pool.
    """

    def __init__(self, front: FrontEnd, spec: Spec) -> None:
        self._parent = front
        self._default = spec
        self._mine: list[TaskFuture] = []
        self._prune_at = 64

    def _front(self) -> FrontEnd:
        return self._parent

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskFuture:
        future = super().submit(fn, *args, **kwargs)
        self._mine.append(future)
        if len(self._mine) >= self._prune_at:
            self._mine = [f for f in self._mine if not f.done()]
            self._prune_at = max(64, 2 * len(self._mine))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            cancel_all(self._mine)
        if wait:
            for f in self._mine:
                try:
                    f.exception()
                except BaseException:  # cancelled
                    pass
