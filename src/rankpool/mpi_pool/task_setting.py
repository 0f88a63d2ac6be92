"""What a rank changes around one task: environment variables and working directory.

An MPI application task also carries its launch choices here (``launcher_options``,
``mpi_launcher``), read by :mod:`.applications` on the rank that runs it.

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
from collections.abc import Callable, Iterable, Iterator
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
    launcher_options: str = ""
    mpi_launcher: str | None = None
    shaped: bool = False          # num_nodes or ranks_per_node given: Parsl's MPI-mode shape


def setting_of(spec: Spec) -> TaskSetting | None:
    """The setting a task's ranks apply; ``env`` wins over the thread variables it names."""
    shaped = spec.num_nodes is not None or spec.ranks_per_node is not None
    if not spec.has_setting and not shaped:
        return None
    variables = dict.fromkeys(THREAD_VARS, str(spec.threads_per_rank)) \
        if spec.threads_per_rank else {}
    variables.update(spec.env)
    return TaskSetting(tuple(variables.items()), spec.cwd, spec.launcher_options,
                       spec.mpi_launcher, shaped)


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
    before = os.getcwd() if setting.cwd else None
    try:
        with environment(setting.variables):
            if setting.cwd:
                _change_directory(setting.cwd, agree)
            yield
    finally:
        if before is not None:
            try:
                os.chdir(before)
            except OSError as exc:  # it vanished while the task ran: say so, carry on
                log.warning("cannot return to %s after a task: %s", before, exc)


def _change_directory(path: str, agree: Callable[[bool], bool] | None) -> None:
    """Enter ``path`` on this rank; fail on every rank if any of them could not."""
    problem = _enter(path)
    everyone = agree(problem is None) if agree is not None else problem is None
    if problem is not None:
        raise TaskSetupError("cwd", problem)
    if not everyone:
        raise TaskSetupError("cwd", f"{path!r} could not be created or entered "
                             "on another rank of the task")


@contextmanager
def environment(variables: Iterable[tuple[str, str]],
                remove: Iterable[str] = ()) -> Iterator[None]:
    """Set ``variables`` and unset ``remove`` in this process for the block, then restore
    every name touched to what it was."""
    environ = os.environ
    pairs = list(variables)
    gone = [name for name in remove if name in environ]
    saved = {name: environ.get(name) for name, _ in pairs}
    saved.update((name, environ[name]) for name in gone if name not in saved)
    try:
        for name in gone:
            del environ[name]
        environ.update(pairs)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                environ.pop(name, None)
            else:
                environ[name] = value
