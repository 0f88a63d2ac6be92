"""What a rank changes around one task: environment variables and working directory.

The ``threads_per_rank``, ``env`` and ``cwd`` resource keys are applied on every rank of the
task just before the function runs and undone right after, whether it returned or raised, so
the next task on the rank starts from the pool's own state. Nothing here imports mpi4py: a
multi-rank task hands in ``agree``, an all-ranks AND over its communicator, so that a ``cwd``
that fails on one rank fails the task on every rank instead of leaving the others to run
collectives alone.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

from ..errors import TaskSetupError
from ..task.resources import Spec

log = logging.getLogger(__name__)

#: variables set to ``threads_per_rank``: OpenMP and the usual BLAS and numeric libraries
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "BLIS_NUM_THREADS")


class TaskSetting(NamedTuple):
    """The per-task changes a worker rank applies (None on a WorkItem when there are none)."""

    variables: tuple[tuple[str, str], ...]
    cwd: str | None


def setting_of(spec: Spec) -> TaskSetting | None:
    """The setting a task's ranks apply; ``env`` wins over the thread variables it names."""
    if not spec.has_setting:
        return None
    variables = dict.fromkeys(THREAD_VARS, str(spec.threads_per_rank)) \
        if spec.threads_per_rank else {}
    variables.update(spec.env)
    return TaskSetting(tuple(variables.items()), spec.cwd)


def _enter(path: str) -> str | None:
    """Create and enter ``path``; the reason it failed, or None."""
    try:
        os.makedirs(path, exist_ok=True)
        os.chdir(path)
    except OSError as exc:
        return f"cannot create or enter {path!r} on {socket.gethostname()}: {exc.strerror or exc}"
    return None


@contextmanager
def applied(setting: TaskSetting | None,
            agree: Callable[[bool], bool] | None = None) -> Iterator[None]:
    """Apply ``setting`` for the duration of the block, then restore what was there."""
    if setting is None:
        yield
        return
    environ = os.environ
    saved = {name: environ.get(name) for name, _ in setting.variables}
    before = os.getcwd() if setting.cwd else None
    try:
        environ.update(setting.variables)
        if setting.cwd:
            problem = _enter(setting.cwd)
            everyone = agree(problem is None) if agree is not None else problem is None
            if problem is not None:
                raise TaskSetupError("cwd", problem)
            if not everyone:
                raise TaskSetupError("cwd", f"{setting.cwd!r} could not be created or entered "
                                     "on another rank of the task")
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                environ.pop(name, None)
            else:
                environ[name] = value
        if before is not None:
            try:
                os.chdir(before)
            except OSError as exc:  # it vanished while the task ran: say so, carry on
                log.warning("cannot return to %s after a task: %s", before, exc)
