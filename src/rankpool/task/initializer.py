"""The executor's ``initializer``, pickled once by the front-end and run on every worker rank.

The front-end pickles ``(initializer, initargs)`` (:func:`dump_initializer`) into a file of its
run directory (:func:`write_initializer`); each worker rank reads and runs it when its pool
starts (:func:`run_initializer`; see :func:`rankpool.mpi_pool.initializer.initialize`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from .serialize import dumps_data, exception_text, loads_data


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


def write_initializer(run_dir: str, payload: bytes) -> str:
    """Write the pickled initializer into ``run_dir`` (mode 0600); its path."""
    path = os.path.join(run_dir, "initializer.pkl")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(payload)
    return path


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
