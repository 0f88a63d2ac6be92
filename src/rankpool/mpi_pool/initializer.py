"""The executor's ``initializer``: run once on every worker rank before it serves.

The front-end pickles ``(initializer, initargs)`` once (:func:`dump_initializer`); each worker
rank runs it when its pool starts (:func:`initialize`, collective over the pool's
communicator), and rank 0 learns which ranks failed and why, so that the front-end can break
with that error (as ``concurrent.futures`` executors do) instead of sending tasks to ranks
whose set-up is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from mpi4py import MPI

from ..task.serialize import dumps_data, exception_text, loads_data

log = logging.getLogger(__name__)


def dump_initializer(initializer: Callable[..., Any] | None, initargs: Sequence[Any]) -> bytes:
    """The pickle of ``(initializer, initargs)``; empty when there is none (checked here)."""
    if initializer is None:
        if initargs:
            raise ValueError("initargs given without an initializer")
        return b""
    if not callable(initializer):
        raise TypeError(f"initializer must be callable, got {type(initializer).__name__}")
    data, buffers = dumps_data((initializer, tuple(initargs)), "the initializer and initargs")
    if buffers:  # out-of-band buffers: pickle them in band instead
        import pickle
        data = pickle.dumps(pickle.loads(data, buffers=buffers), protocol=5)
    return data


def read_initializer(path: str) -> bytes:
    """The pickled initializer the executor wrote at ``path`` (b"" for none)."""
    if not path:
        return b""
    with open(path, "rb") as f:
        return f.read()


def run_initializer(payload: bytes) -> str:
    """Run the pickled initializer here; "" when it ran, else what it raised."""
    if not payload:
        return ""
    try:
        fn, args = loads_data(payload)
        fn(*args)
        return ""
    except BaseException as exc:  # its outcome, whatever it is, becomes a value
        return f"{type(exc).__name__}: {exception_text(exc)}"


def initialize(comm: MPI.Intracomm, payload: bytes, workers: Sequence[int]) -> str:
    """Collective over ``comm``: the ranks in ``workers`` run the initializer; on rank 0, the
    first failure as ``"rank R: error"`` ("" when every rank succeeded; elsewhere always "")."""
    if not payload:
        return ""
    rank = comm.Get_rank()
    error = run_initializer(payload) if rank in workers else ""
    if error:
        log.error("rank %d: the initializer failed: %s", rank, error)
    errors = comm.gather(error, root=0)
    if errors is None:
        return ""
    failed = [(r, e) for r, e in enumerate(errors) if e]
    if not failed:
        return ""
    more = f" (and on {len(failed) - 1} more ranks)" if len(failed) > 1 else ""
    return f"the initializer failed on rank {failed[0][0]}: {failed[0][1]}{more}"
