"""``map`` and ``starmap`` of the ``concurrent.futures`` front-ends.

Every call is submitted when ``map`` is called (as in ``concurrent.futures``), ``chunksize``
calls per task (as ``ProcessPoolExecutor`` and ``mpi4py.futures`` do): a chunk runs on one
worker rank, one call after another, through :func:`run_chunk`, which the ranks import by
reference. Results come in the order of the arguments, or as their tasks complete with
``unordered=True``; an error is raised where its call's result would have come. The iterator
drops each future once it has read it, so results it yielded are not kept alive.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, as_completed
from itertools import chain, islice, starmap
from typing import Any, cast

from ..task.injection import comm_position, inject
from .cancelling import cancel_all

Submit = Callable[..., Future[Any]]


def check_chunksize(chunksize: Any) -> int:
    if isinstance(chunksize, bool) or not isinstance(chunksize, int):
        raise TypeError(f"chunksize must be an integer, got {type(chunksize).__name__}")
    if chunksize < 1:
        raise ValueError(f"chunksize must be at least 1, got {chunksize}")
    return chunksize


def map_calls(submit: Submit, fn: Callable[..., Any], calls: Iterable[Any],
              timeout: float | None = None, chunksize: int = 1,
              unordered: bool = False, spread: bool = True) -> Iterator[Any]:
    """Submit ``fn(*args)`` for every ``args`` of ``calls`` now (``fn(x)`` for every ``x``
    when not ``spread``); an iterator of the results.

    Chunks are sliced off ``calls`` and run on the ranks (:func:`run_chunk`) with no step per
    call on the caller's side: a chunked map costs the caller well under a microsecond per
    call."""
    chunksize = check_chunksize(chunksize)
    end = None if timeout is None else time.monotonic() + timeout
    if chunksize == 1:
        if spread:
            futures = [submit(fn, *args) for args in calls]
        else:
            futures = [submit(fn, x) for x in calls]
        chunked = False
    else:
        futures = [submit(run_chunk, fn, chunk, spread) for chunk in _chunks(calls, chunksize)]
        chunked = True
    values = _as_completed(futures, timeout) if unordered else _in_order(futures, end)
    if not chunked:
        return values
    results = cast(_ChunkResults, _ChunkResults.from_iterable(values))  # chain's, typed as chain
    results.chunks = values
    return results


class _ChunkResults(chain):  # type: ignore[type-arg]  # chain's item type is its iterables'
    """The results of a chunked map, read straight from each chunk's list (no generator step
    per call); ``close()`` ends it as a generator's would, cancelling what was not read."""

    chunks: Generator[Any, None, None]

    def close(self) -> None:
        self.chunks.close()


def _chunks(calls: Iterable[Any], size: int) -> Iterator[Any]:
    """``calls`` in slices of ``size``: a ``range``, ``list`` or ``tuple`` is sliced (a range's
    slice is a range, a few bytes to send however many calls it holds; a list's is a copy taken
    now), anything else is read ``size`` items at a time into lists."""
    if isinstance(calls, (range, list, tuple)):
        return (calls[i:i + size] for i in range(0, len(calls), size))
    it = iter(calls)
    return iter(lambda: list(islice(it, size)), [])


def _in_order(futures: list[Future[Any]], end: float | None) -> Generator[Any, None, None]:
    futures.reverse()  # popped from the end: a read future is dropped at once
    try:
        while futures:
            left = None if end is None else end - time.monotonic()
            yield _result(futures.pop(), left)
    finally:
        cancel_all(futures)


def _as_completed(futures: list[Future[Any]],
                  timeout: float | None) -> Generator[Any, None, None]:
    pending = set(futures)
    del futures
    try:
        for future in as_completed(pending, timeout):
            pending.discard(future)
            value = _result(future, None)
            del future
            yield value
            del value
    finally:
        cancel_all(pending)


def _result(future: Future[Any], timeout: float | None) -> Any:
    """The future's result; the caller keeps no reference to the future itself."""
    try:
        return future.result(timeout)
    finally:
        del future


def run_chunk(fn: Callable[..., Any], chunk: list[Any], spread: bool = True,
              comm: Any = None) -> list[Any]:
    """Run one chunk of a ``map`` on a worker rank: ``fn(*args)`` for each ``args`` in turn
    (``fn(x)`` for each ``x`` when not ``spread``; ``fn``'s own ``comm`` parameter, if any,
    gets the task's communicator)."""
    position = comm_position(fn)
    if position is None:
        if spread:
            return list(starmap(fn, chunk))
        # a comprehension, not map(): the interpreter runs a call made from Python code in its
        # own loop, one from map's C loop in a new one (a no-op call costs 22 % less here);
        # fn(*args) is not so helped, and starmap is the faster there
        return [fn(x) for x in chunk]
    results = []
    for args in chunk:
        call_args, kwargs = inject(position, args if spread else (args,), {}, comm)
        results.append(fn(*call_args, **kwargs))
    return results
