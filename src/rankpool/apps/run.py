"""``run_mpi``: start an MPI program on the ranks an application task holds.

Submitted as a task on N ranks (``Executor.requirements(num_ranks=N).submit(run_mpi, argv)``),
``run_mpi`` runs on the first of them with the task's launch prefix in its environment (see
:mod:`.prefix`) and starts ``PREFIX ARGV`` as a child process, in the task's ``cwd``. It
returns an :class:`MpiRun` (exit code, output, command line), or raises
:class:`~rankpool.errors.ApplicationError` for a non-zero exit (``check=True``). When the
task's walltime passes, or anything else interrupts it, the application's whole process tree
is ended before the interruption goes on.

``mode="spawn"`` starts the program with ``MPI_Comm_spawn`` from the rank instead of a
launcher (see :mod:`rankpool.mpi_pool.spawn`).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psutil

from ..errors import ApplicationError, ApplicationSetupError
from .process_tree import end_processes

#: characters of stdout/stderr an ApplicationError keeps
TAIL = 4000

MODES = ("launcher", "spawn")


@dataclass(frozen=True)
class MpiRun:
    """What an MPI application did: its command line, exit code, output and run time."""

    command: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def run_mpi(argv: str | Sequence[str | os.PathLike[str]], *, env: Mapping[str, str] | None = None,
            mode: str = "launcher", check: bool = True) -> MpiRun:
    """Run the MPI program ``argv`` on the ranks of the application task that calls this.

    ``argv`` is the program and its arguments (a string is split as a shell would);
    ``env`` adds variables for the program only. The task's ``cwd`` resource key sets where
    it runs. With ``check`` (the default) a non-zero exit raises ``ApplicationError``.
    """
    words = _words(argv)
    if mode not in MODES:
        raise ApplicationSetupError("mode", f"must be one of {MODES}, got {mode!r:.60}")
    environ = dict(os.environ)
    if env is not None:
        environ.update(_checked_env(env))
    _check_program(words[0], environ)
    if mode == "spawn":
        from ..mpi_pool.spawn import spawn  # mpi4py only where spawn mode is asked for
        return spawn(words, environ)
    prefix = os.environ.get("RANKPOOL_MPI_PREFIX")
    if not prefix:
        raise ApplicationSetupError("num_ranks", "run_mpi runs only as a rankpool task: no "
                                    "RANKPOOL_MPI_PREFIX in its environment")
    command = shlex.split(prefix) + words
    launcher = shutil.which(command[0], path=environ.get("PATH"))
    if launcher is None:
        raise ApplicationSetupError("mpi_launcher", f"{command[0]!r} is not on PATH "
                                    f"({environ.get('PATH', '')[:200]})")
    return _launch(command, environ, check)


#: application tasks on any number of ranks, one included (see mpi_pool.applications)
run_mpi.rankpool_application = True  # type: ignore[attr-defined]


def _launch(command: list[str], environ: dict[str, str], check: bool) -> MpiRun:
    start = time.monotonic()
    proc = subprocess.Popen(command, env=environ, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace")
    try:
        out, err = proc.communicate()
    except BaseException:  # walltime, Ctrl-C: the application goes with the task
        end_processes([psutil.Process(proc.pid)] if proc.poll() is None else [])
        proc.wait()
        raise
    done = MpiRun(command, proc.returncode, out, err, time.monotonic() - start)
    if check and proc.returncode != 0:
        raise ApplicationError(proc.returncode, command, out[-TAIL:], err[-TAIL:])
    return done


def _words(argv: str | Sequence[str | os.PathLike[str]]) -> list[str]:
    if isinstance(argv, str):
        words = shlex.split(argv)
    elif isinstance(argv, Sequence) and all(isinstance(w, (str, os.PathLike)) for w in argv):
        words = [os.fspath(w) for w in argv]
    else:
        raise ApplicationSetupError("argv", f"must be a command line or a sequence of "
                                    f"strings, got {argv!r:.80}")
    if not words or not words[0]:
        raise ApplicationSetupError("argv", "names no program")
    return words


def _checked_env(env: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(env, Mapping) or not all(
            isinstance(k, str) and k and "=" not in k and isinstance(v, str)
            for k, v in env.items()):
        raise ApplicationSetupError("env", f"must map variable names to strings, got {env!r:.80}")
    return dict(env)


def _check_program(program: str, environ: Mapping[str, str]) -> None:
    """Refuse a program that is missing or not executable, before any launcher starts."""
    if os.sep in program:
        if not os.path.isfile(program) or not os.access(program, os.X_OK):
            where = os.path.abspath(program)
            what = "is not executable" if os.path.isfile(program) else "does not exist"
            raise ApplicationSetupError("argv", f"program {where} {what}")
    elif shutil.which(program, path=environ.get("PATH")) is None:
        raise ApplicationSetupError("argv", f"program {program!r} is not on PATH")
