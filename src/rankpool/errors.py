"""Every exception rankpool raises.

All of them derive from :class:`RankPoolError` (or, for a broken executor, from
``concurrent.futures.BrokenExecutor`` as well) and carry structured attributes, so callers
can branch on the kind of failure instead of parsing messages.
"""

from __future__ import annotations

from concurrent.futures import BrokenExecutor
from typing import Any

from .wording import counted, describe_exit, describe_exits


class RankPoolError(Exception):
    """Base class of every rankpool error."""


class ResourceSpecError(RankPoolError, ValueError):
    """A resource specification was refused at submit; ``key`` names the offending key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"resource specification key {key!r}: {message}")
        self.key = key
        self.detail = message

    def __reduce__(self) -> tuple[Any, ...]:
        # a pool fails a task it can no longer hold with this error: it must unpickle as itself
        return type(self), (self.key, self.detail)


class TaskSetupError(ResourceSpecError):
    """A task's ``cwd`` or ``env`` could not be applied on one of its ranks, so the task did
    not run (the pool and its other tasks carry on); ``key`` names the key."""


class SerializationError(RankPoolError):
    """A function, argument, result or exception could not be (de)serialized.

    The message says it in one line: what, where the object that failed is (``culprit``:
    ``keyword argument 'rows': a generator``) and the pickler's own error; the pickler's
    long traceback is not chained to it.
    """

    def __init__(self, what: str, cause: BaseException, culprit: str = "") -> None:
        where = f" ({culprit})" if culprit else ""
        super().__init__(f"cannot serialize {what}{where}: {type(cause).__name__}: {cause}")
        self.what = what
        self.culprit = culprit
        self.cause_text = f"{type(cause).__name__}: {cause}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_serialization_error, (self.what, self.cause_text, self.culprit))


class SharedMemoryError(RankPoolError):
    """A buffer sent through same-host shared memory could not be read: its segment is on
    another host, gone (its owner exited), already freed, or the descriptor is malformed.
    ``segment`` names the segment ("?" when the descriptor does not say), ``reason`` says why."""

    def __init__(self, segment: str, reason: str) -> None:
        super().__init__(f"shared-memory buffer in segment {segment!r} cannot be read: {reason}")
        self.segment = segment
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        # raised on a worker rank while loading a task's arguments: it must unpickle as itself
        return type(self), (self.segment, self.reason)


class RemoteTraceback(Exception):
    """Carries the formatted traceback of a remote rank; attached as ``__cause__``."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class RemoteTaskError(RankPoolError):
    """A task raised an exception whose type could not be rebuilt on the submit side.

    ``type_name`` is the remote exception's qualified class name, ``remote_message`` its text.
    """

    def __init__(self, type_name: str, remote_message: str, rank: int = 0, size: int = 1,
                 host: str = "") -> None:
        super().__init__(f"{type_name}: {remote_message} (rank {rank} of {size} on {host})")
        self.type_name = type_name
        self.remote_message = remote_message
        self.rank = rank
        self.size = size
        self.host = host

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.type_name, self.remote_message, self.rank, self.size, self.host))


class TaskExit(RankPoolError):
    """A task raised a ``BaseException`` that is not an ``Exception``: ``SystemExit``
    (``sys.exit()``), ``KeyboardInterrupt`` (an interrupted task), ``GeneratorExit`` or another.

    Only that task failed: the worker rank and the pool carry on, and the submitting program sees
    this ordinary exception instead of one that would end it or kill the thread that settles
    futures. ``type_name`` is the original's qualified type name, ``code`` its exit code
    (``SystemExit.code``; None for the other types). As for every remote error, ``__cause__``
    is the remote traceback (which shows the original); the original itself, where it can be
    rebuilt here, is ``__context__``.
    """

    def __init__(self, type_name: str, code: object = None, message: str = "") -> None:
        raised = f"{type_name}({code!r})" if code is not None else type_name
        super().__init__(f"the task raised {raised}{': ' + message if message else ''} "
                         f"(only this task failed)")
        self.type_name = type_name
        self.code = code
        self.detail = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.type_name, self.code, self.detail))


class TaskTimeout(RankPoolError, TimeoutError):
    """A task ran past its ``walltime``."""

    def __init__(self, task_id: int, walltime: float) -> None:
        super().__init__(f"task {task_id} ran past its walltime of {walltime:g} s")
        self.task_id = task_id
        self.walltime = walltime

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.task_id, self.walltime))


class StuckRanksError(RankPoolError):
    """Some ranks of a task failed while others never returned within the grace period."""

    def __init__(self, task_id: int, stuck: list[int], grace: float) -> None:
        super().__init__(
            f"task {task_id}: ranks {stuck} of its communicator did not return within "
            f"{grace:g} s after another rank failed; they are marked stuck")
        self.task_id = task_id
        self.stuck = stuck
        self.grace = grace

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.task_id, self.stuck, self.grace))


class ManagerLost(RankPoolError):
    """The pool (block) that held a task was lost: killed, crashed or silent past the threshold."""

    def __init__(self, block_id: str, hosts: list[str] | tuple[str, ...], reason: str) -> None:
        super().__init__(f"pool of block {block_id!r} on {', '.join(hosts) or '?'} lost: {reason}")
        self.block_id = block_id
        self.hosts = list(hosts)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.block_id, self.hosts, self.reason))


class WorkerLost(RankPoolError):
    """A worker rank of the pool died (a signal such as SIGSEGV, SIGKILL or the OOM killer's,
    or an exit from inside the task) while it held this task: the task fails, the pool serves
    on without the rank. ``status`` is the rank's exit status, negative for a signal (``-11``:
    SIGSEGV), None when unknown; ``signal`` and ``exit_code`` split it. With Parsl, ``retries``
    run the task again (on this pool's other ranks or another block)."""

    def __init__(self, task_id: int, rank: int, host: str, pid: int, status: int | None,
                 what: str = "while running it") -> None:
        super().__init__(f"task {task_id} lost: worker rank {rank} (pid {pid} on {host}) "
                         f"{describe_exit(status)} {what}")
        self.task_id = task_id
        self.rank = rank
        self.host = host
        self.pid = pid
        self.status = status
        self.what = what

    @property
    def signal(self) -> int | None:
        """The signal that killed the rank, or None."""
        return -self.status if self.status is not None and self.status < 0 else None

    @property
    def exit_code(self) -> int | None:
        """The rank's exit status when it exited by itself, or None."""
        return self.status if self.status is not None and self.status >= 0 else None

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.task_id, self.rank, self.host, self.pid, self.status, self.what))


class BlockStartFailed(RankPoolError):
    """A block ended before its pool registered, as many times in a row as the executor allows.

    ``block_id`` and ``job_id`` name the last such block, ``cause`` says how it failed (a
    :class:`rankpool.protocol.starts.StartCause`: the job or launch ended, a rank died as the
    pool started, the pool could not reach the interchange, the provider could not submit),
    ``detail`` quotes what it left (the tail of its output and of its pool's log),
    ``failures`` counts the failed starts in a row.
    """

    def __init__(self, block_id: str, job_id: str, cause: object, detail: str,
                 failures: int = 1) -> None:
        what = getattr(cause, "value", str(cause))
        job = f" (job {job_id})" if job_id else ""
        times = f" ({failures} failed starts in a row)" if failures > 1 else ""
        super().__init__(f"block {block_id}{job} could not start{times}: {what}"
                         + (f":\n{detail}" if detail else ""))
        self.block_id = block_id
        self.job_id = job_id
        self.cause = cause
        self.detail = detail
        self.failures = failures

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.block_id, self.job_id, self.cause, self.detail, self.failures))


class VersionMismatch(RankPoolError):
    """A pool and an interchange disagree on protocol, Python or rankpool version."""

    def __init__(self, what: str, ours: str, theirs: str) -> None:
        super().__init__(f"{what} mismatch: interchange has {ours}, pool has {theirs}")
        self.what = what
        self.ours = ours
        self.theirs = theirs

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.what, self.ours, self.theirs))


class ProtocolError(RankPoolError):
    """A message did not follow the wire protocol; it is dropped."""


class ExecutorShutdown(RankPoolError, RuntimeError):
    """The executor was shut down before the task finished."""


class TaskCancelled(RankPoolError):
    """A task's future was cancelled and the pool dropped the task before it started (the
    outcome the pool reports for it, which its cancelled future never shows)."""

    def __init__(self, task_id: int) -> None:
        super().__init__(f"task {task_id} was cancelled before it started")
        self.task_id = task_id

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.task_id,))


class BrokenPool(RankPoolError, BrokenExecutor):
    """The executor can no longer run tasks; ``cause`` says why."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.cause))


class InsufficientRanks(RankPoolError):
    """A queued task can no longer fit: the pool lost usable ranks (stuck, or dead) since it
    was accepted."""

    def __init__(self, task_id: int, needed: int, usable: int) -> None:
        super().__init__(f"task {task_id} needs {counted(needed, 'rank')} but the pool has only "
                         f"{counted(usable, 'usable rank')} left (the others are stuck or dead)")
        self.task_id = task_id
        self.needed = needed
        self.usable = usable

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.task_id, self.needed, self.usable))


def _rebuild_serialization_error(what: str, cause_text: str,
                                 culprit: str = "") -> SerializationError:
    exc = SerializationError.__new__(SerializationError)
    where = f" ({culprit})" if culprit else ""
    RankPoolError.__init__(exc, f"cannot serialize {what}{where}: {cause_text}")
    exc.what = what
    exc.culprit = culprit
    exc.cause_text = cause_text
    return exc


class EncryptionUnavailable(RankPoolError, RuntimeError):
    """Encryption was asked for (or is due off loopback) but this pyzmq has no CurveZMQ."""


class KeyFileError(RankPoolError, ValueError):
    """A key file or key directory is missing, malformed or readable by others; ``path`` names
    it."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.message))


class ApplicationError(RankPoolError):
    """An MPI application started by :func:`rankpool.run_mpi` exited with a non-zero code.

    ``returncode`` is the launcher's exit status (negative: killed by that signal),
    ``command`` the full command line, ``stdout``/``stderr`` the tails of its output."""

    def __init__(self, returncode: int, command: list[str], stdout: str, stderr: str) -> None:
        last = stderr.strip().splitlines()[-1:] or stdout.strip().splitlines()[-1:]
        super().__init__(f"MPI application exited with code {returncode}: "
                         f"{' '.join(command)}" + (f" ({last[0][:200]})" if last else ""))
        self.returncode = returncode
        self.command = command
        self.stdout = stdout
        self.stderr = stderr

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.returncode, self.command, self.stdout, self.stderr))


class SpawnedProgramLost(WorkerLost):
    """``run_mpi(mode="spawn")``: the spawned program ended before ``MPI_Init`` (an exit at
    its top, an import error), which ``MPI_Comm_spawn`` never notices, so its parent, the
    task's first rank, was ended: nothing else ends that call. ``program`` is what was
    spawned, ``count`` how many processes; ``exit_codes`` the exit statuses that could be read
    (negative: a signal; empty when they were collected before rankpool saw them). The pool
    serves on without the rank; launcher mode loses no rank for a program that fails to
    start."""

    def __init__(self, task_id: int, rank: int, host: str, pid: int, status: int | None,
                 program: str, count: int, exit_codes: tuple[int, ...] = ()) -> None:
        super().__init__(task_id, rank, host, pid, status, "")
        self.args = (f"task {task_id} lost: the spawned program {program} ({count} "
                     f"process{'es' if count != 1 else ''}) {describe_exits(exit_codes)} "
                     f"before MPI_Init; its parent, "
                     f"worker rank {rank} (pid {pid} on {host}), was ended, as MPI_Comm_spawn "
                     f"cannot be interrupted: run programs that may fail to start with "
                     f"mode='launcher' (the default)",)
        self.program = program
        self.count = count
        self.exit_codes = tuple(exit_codes)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.task_id, self.rank, self.host, self.pid, self.status,
                             self.program, self.count, self.exit_codes))


class SpawnUnsupported(RankPoolError):
    """``run_mpi(mode="spawn")`` was refused by the MPI library; launcher mode is the
    alternative."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"MPI_Comm_spawn is not available here ({reason}); run the "
                         "application with mode='launcher' (the default) instead")
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason,))


class ApplicationSetupError(TaskSetupError):
    """An MPI application could not be started: its program is missing, or its launch prefix
    cannot be composed; ``key`` names the argument or resource key to change."""

    def __init__(self, key: str, message: str) -> None:
        RankPoolError.__init__(self, f"MPI application {key!r}: {message}")
        self.key = key
        self.detail = message


class RunDirError(RankPoolError, PermissionError):
    """A run directory, or a file in one, cannot be used privately: it is a link, belongs to
    another user, or others may write to it; ``path`` names it and ``reason`` says why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"run directory path {path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.reason))


class MessageTooLarge(RankPoolError, ValueError):
    """A task or a result is larger than the run's ``max_message_size``, so it cannot travel
    as a message (every socket refuses larger ones); ``what`` names it, ``size`` and ``limit``
    are in bytes."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(f"{what} is {size} bytes, over the run's max_message_size of {limit} "
                         "bytes; send large arrays through shared memory (same host) or raise "
                         "max_message_size")
        self.what = what
        self.size = size
        self.limit = limit

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.what, self.size, self.limit))
