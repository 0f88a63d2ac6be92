"""The keeper: a small parent process for each pool rank, so that a rank's death has a witness.

``python -m rankpool.mpi_pool`` forks before MPI starts (see :func:`keep`). The child goes on to
be the MPI rank; the parent, the *keeper*, is the process the launcher started: it forwards the
launcher's signals to the child, waits for it, and is the only process that learns how it ended
(a signal such as SIGSEGV or SIGKILL, or an exit status). The child sets ``PR_SET_PDEATHSIG``,
so it never outlives its keeper. The signals it forwards are blocked from just before the fork
until its handlers are in: one that comes meanwhile waits, and is passed on.

When a worker rank dies while it serves, its keeper writes a *death note* (JSON: pid, how it
ended, the task it was running) into the pool's note directory on that node, or sends it to
rank 0 from another node (:mod:`.far_notes`), then exits 0.
Exiting 0 matters: Hydra ends the whole job when a process dies of a signal, even under
``-disable-auto-cleanup``, and ``srun --kill-on-bad-exit`` on a non-zero status; a keeper that
exits 0 leaves the job running and tells rank 0 what happened (:mod:`.deaths`). Rank 0's own
keeper, and a rank that ended its serving cleanly, pass the child's status on unchanged (a
signal is raised again on the keeper).

The child shares one page of memory with its keeper (:class:`Link`): the task it is running,
written before each task starts, so the keeper can name it (a few nanoseconds per task, no
system call). A rank that ends itself on purpose first tells its keeper why
(:func:`last_words`, a line on the pipe the keeper reads once the rank is gone), and the note
carries it as its ``cause``.

A rank that dies before it serves (its block was cancelled or killed at a signal while MPI
started, or a rank of it failed there) may leave MPICH's file of its node in ``/dev/shm``: the
pool unlinks it only once every rank is past ``MPI_Init``. Its keeper then removes what no
process maps any more (:func:`.mpich_files.sweep`), so a block cancelled as it starts leaves
nothing on its nodes, as long as the batch system signals before it kills (Slurm: SIGTERM,
then SIGKILL after ``KillWait``).

A rank that dies *by itself* before it serves (it crashed or failed in ``MPI_Init``: no
signal that stops a job came through its keeper or ended it) leaves the pool unable to
start: the other ranks would wait for it in ``MPI_Init`` or the start's collectives until the
job's walltime, as the launch options that let a pool survive a rank's death
(``--kill-on-bad-exit=0``, ``-disable-auto-cleanup``) keep the launcher from ending them. Its
keeper says so on standard error and ends the launch (:func:`_end_launch`): in an ``srun``
step, by sending the step SIGTERM; under other launchers, by dying of a signal, which ends a Hydra
or Open MPI job. The block's job then ends, and the executor reports a failed start that
quotes the keeper's line.
"""

from __future__ import annotations

import json
import mmap
import os
import signal
import struct
import sys
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from .far_notes import send_note

#: set to 1 to start pools without keepers (no rank death is then survived)
ENV_OFF = "RANKPOOL_NO_KEEPER"
_PAGE = struct.Struct("<qqq")   # state, task id, rank
_TASK = struct.Struct("<qq")    # the page's first two fields: state, task id
FRESH, IN_TASK, FINISHED, BETWEEN = 0, 1, 2, 3  # states of the shared page
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCONT,
              signal.SIGTSTP)
#: Hydra (``-disable-auto-cleanup``) signals a process failure to the others with SIGUSR1:
#: the pool learns of deaths from keepers, and a rank must not die of the notice
_IGNORED = (signal.SIGUSR1, signal.SIGUSR2)
_PR_SET_PDEATHSIG = 1
_BETWEEN = struct.pack("<q", BETWEEN)
#: whether the launcher signalled this keeper to end (it forwarded such a signal to its rank)
_signalled = False
#: the signals that stop a job (a batch system may send them to the rank itself, before or
#: without its keeper): a rank ended by one of them did not die by itself
_STOPS = frozenset((signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGKILL))
#: this process's link to its keeper, once :func:`keep` returned it (None: no keeper)
_link: Link | None = None


class Link:
    """The rank's side of its keeper: what it tells it, through a shared page and a pipe."""

    __slots__ = ("page", "pipe", "keeper_pid", "task", "idle")

    def __init__(self, page: mmap.mmap, pipe: int, keeper_pid: int) -> None:
        self.page = page
        self.pipe = pipe
        self.keeper_pid = keeper_pid
        # told around every task: calls made in C, no Python frame each
        #: ``task(task_id)``: this task runs now
        self.task: Callable[[int], None] = partial(_TASK.pack_into, page, 0, IN_TASK)
        #: ``idle()``: between tasks (the page keeps the last task's id)
        self.idle: Callable[[], None] = partial(page.__setitem__, slice(0, 8), _BETWEEN)

    def serving(self, rank: int, note_dir: str, far: str = "", host: str = "") -> None:
        """This rank serves: should it die from now on, its keeper leaves a note in
        ``note_dir`` or, given rank 0's ``far`` address (this rank is on another node), sends
        it there, naming this rank's ``host`` (rank 0 passes its own death on instead)."""
        _PAGE.pack_into(self.page, 0, FRESH, 0, rank)
        line = json.dumps({"notes": note_dir, "far": far, "host": host})
        os.write(self.pipe, f"{line}\n".encode())

    def last_words(self, cause: dict[str, Any]) -> None:
        """Why this rank is about to end itself: the death note carries ``cause``."""
        os.write(self.pipe, f"{json.dumps({'cause': cause})}\n".encode())

    def finished(self) -> None:
        """The rank ended its serving cleanly: its exit status is the pool's own."""
        self.page[0:8] = struct.pack("<q", FINISHED)


def keep() -> Link | None:
    """Fork: return the child's :class:`Link` in the child; the keeper never returns (it exits
    with the status described in the module docstring). None where there is no ``fork`` or
    keepers are turned off (``RANKPOOL_NO_KEEPER=1``)."""
    if os.environ.get(ENV_OFF) == "1" or not hasattr(os, "fork") or sys.platform != "linux":
        return None
    page = mmap.mmap(-1, mmap.PAGESIZE)
    read_end, write_end = os.pipe()
    keeper_pid = os.getpid()
    started = time.time()
    # a stop that comes between the fork and the keeper's handlers waits for them (blocked,
    # then pending): unblocked, it would end the keeper without its sweep (SIGTERM) or raise
    # KeyboardInterrupt in the fork's hooks, where it is ignored, the rank left running
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
    child = os.fork()
    if child == 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(read_end)
        _die_with_parent()
        if os.getppid() != keeper_pid:  # the keeper died before the flag was set
            os._exit(1)
        global _link
        _link = Link(page, write_end, keeper_pid)
        return _link
    os.close(write_end)
    os.set_blocking(read_end, False)  # a grandchild may hold the write end: never wait for it
    # the keeper keeps no copy of the launcher's sockets (PMI): every descriptor but the
    # standard three and the pipe's end goes (a launcher that closed standard input leaves
    # the pipe on descriptor 0)
    os.closerange(3, max(3, read_end))
    os.closerange(max(3, read_end + 1), 1 << 16)
    _serve_as_keeper(child, page, read_end, started, mask)
    raise AssertionError("unreachable")


def last_words(cause: dict[str, Any]) -> bool:
    """Tell this rank's keeper why it is about to end itself (see :meth:`Link.last_words`);
    False where it has no keeper."""
    if _link is None:
        return False
    _link.last_words(cause)
    return True


def _serve_as_keeper(child: int, page: mmap.mmap, pipe: int, started: float,
                     mask: Iterable[int]) -> None:
    """Forward the launcher's signals to ``child`` (those that came since the fork first:
    ``mask`` is the signal mask before they were blocked), wait for it, and end as it did."""
    for sig in _FORWARDED:
        signal.signal(sig, lambda signum, frame: _forward(child, signum))
    for sig in _IGNORED:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except ChildProcessError:
            os._exit(1)
    code = os.waitstatus_to_exitcode(status)
    state, task_id, rank = _PAGE.unpack_from(page)
    told = _told(_read_all(pipe))
    serving = {k: v for k, v in told.items() if isinstance(v, str)}
    note_dir = serving.get("notes", "")
    if not note_dir and code != 0:  # died before it served: MPICH's file may be left
        _sweep_since(started)
        if not _signalled and -code not in _STOPS:  # by itself: the others cannot start
            code = _end_launch(child, code)
    if note_dir and state != FINISHED and rank > 0:
        note = {"pid": child, "rank": rank, "status": code, "running": state == IN_TASK,
                "task": task_id if state in (IN_TASK, BETWEEN) else None,
                "host": serving.get("host", "")}
        if isinstance(told.get("cause"), dict):
            note["cause"] = told["cause"]
        far = serving.get("far", "")
        if not far or not send_note(far, note):
            write_note(note_dir, child, note)
        os._exit(0)
    if note_dir:  # the pool's end: its note directory goes with its last process
        try:
            os.rmdir(note_dir)
        except OSError:
            pass
    if code < 0:  # died of a signal: die of it too, so the launcher sees the same
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code if code >= 0 else 128 - code)


def write_note(note_dir: str, pid: int, note: dict[str, Any]) -> None:
    """Leave ``note_dir/<pid>.json`` whole (written aside, then renamed), readable by us only."""
    path = os.path.join(note_dir, f"{pid}.json")
    tmp = f"{path}.tmp"
    try:
        os.makedirs(note_dir, mode=0o700, exist_ok=True)  # a keeper that ended may have removed it
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(note, fh)
        os.replace(tmp, path)
    except OSError as exc:
        os.write(2, f"rankpool keeper: cannot write {path}: {exc}\n".encode())


def _told(text: str) -> dict[str, Any]:
    """What the rank told its keeper, later lines over earlier ones ({}: nothing, the rank
    never served)."""
    told: dict[str, Any] = {}
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            told.update(item)
    return told


def _sweep_since(started: float) -> None:
    try:
        from .mpich_files import sweep
        for path in sweep(started):
            os.write(2, f"rankpool keeper: removed {path}, left by a rank that died as MPI "
                        f"started\n".encode())
    except Exception as exc:  # the keeper must still exit with its rank's status
        os.write(2, f"rankpool keeper: could not sweep /dev/shm: {exc}\n".encode())


def _end_launch(child: int, code: int) -> int:
    """End the launch of a pool whose rank ``child`` died by itself before the pool started
    (``code``: how); the status the keeper is then to end with."""
    from ..protocol.starts import RANK_DIED_WORDS
    from ..wording import describe_exit
    from .node_names import node_name
    what = (f"rankpool keeper: pool rank process {child} on {node_name()} {describe_exit(code)} "
            f"{RANK_DIED_WORDS}")
    step = _own_slurm_step()
    if step:
        os.write(2, f"{what}: ending job step {step}\n".encode())
        import subprocess
        try:
            # SIGTERM, not the cancel's SIGKILL: each keeper passes it on, and sweeps MPICH's
            # files that its rank leaves
            subprocess.run(["scancel", "--quiet", "--signal=TERM", step], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            os.write(2, f"rankpool keeper: scancel {step} failed: {exc}\n".encode())
        return code
    os.write(2, f"{what}: ending the launch\n".encode())
    return code if code < 0 else -signal.SIGTERM  # a signal ends a Hydra or Open MPI job


def _own_slurm_step() -> str:
    """``JOB.STEP`` when ``srun`` started this keeper as a task of that step ("" otherwise: a
    rank under an ``mpiexec`` inherits the variables of a step it is not a task of)."""
    job, step = os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_STEP_ID")
    if not job or not step:
        return ""
    from ..apps.process_tree import process_name
    return f"{job}.{step}" if process_name(os.getppid()) == "slurmstepd" else ""


def _forward(child: int, signum: int) -> None:
    global _signalled
    _signalled = _signalled or signum in _STOPS
    try:
        os.kill(child, signum)
    except ProcessLookupError:
        pass


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # nothing more now (BlockingIOError) or a closed pipe
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


def _die_with_parent() -> None:
    """Ask the kernel to kill this process when its parent (the keeper) dies."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
