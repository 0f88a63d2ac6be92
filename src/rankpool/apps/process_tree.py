"""The processes an MPI application task started, and how they are ended.

A launcher (``mpiexec``, ``srun``) starts helpers that put their ranks in sessions of their
own, so a process group does not hold an application: its processes are found by parentage
instead (``psutil``), and ended together: ``SIGTERM`` first, so that a launcher can take its
remote ranks down with it, then ``SIGKILL`` for whatever is left after ``grace`` seconds.

Parentage breaks when a process in the middle dies first (a shell killed at a timeout leaves
its ``mpiexec`` to init): a rank that runs applications is made a *child subreaper*
(:func:`adopt_orphans`), so such orphans stay below it, where :func:`descendants` finds them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
from collections.abc import Iterable

import psutil

from ..mpi_pool.mpich_files import mapped

log = logging.getLogger(__name__)

#: seconds between SIGTERM and SIGKILL
GRACE = 2.0


#: prctl option: orphans below this process are reparented to it, not to init (Linux >= 3.4)
_PR_SET_CHILD_SUBREAPER = 36


def adopt_orphans() -> bool:
    """Make this process adopt the orphaned processes below it; False where it cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def child_pids(pid: int) -> set[int] | None:
    """The children of process ``pid``, zombies included (Linux lists each thread's children
    in ``/proc``); None where that cannot be read."""
    found: set[int] = set()
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.update(int(word) for word in f.read().split())
    except (OSError, ValueError):
        return None
    return found


def _has_children() -> bool:
    """Whether this process has a child; True where that cannot be read."""
    found = child_pids(os.getpid())
    return found is None or bool(found)


def _stat(pid: int) -> tuple[str, list[str]] | None:
    """Process ``pid``'s name (the kernel keeps its first 15 characters) and the fields of
    ``/proc/<pid>/stat`` after it (state, parent, ...); None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()


def process_name(pid: int) -> str:
    """The kernel's name of process ``pid`` ("" when gone)."""
    stat = _stat(pid)
    return stat[0] if stat else ""


def parent_of(pid: int) -> int | None:
    """The parent of process ``pid`` (None: gone)."""
    stat = _stat(pid)
    return int(stat[1][1]) if stat else None


def ancestor_named(names: tuple[str, ...], pid: int | None = None) -> int | None:
    """The nearest ancestor of ``pid`` (default: this process) named one of ``names`` (the
    kernel keeps a name's first 15 characters)."""
    pid = os.getpid() if pid is None else pid
    short = {name[:15] for name in names}
    while pid > 1:
        stat = _stat(pid)
        if stat is None:
            return None
        if stat[0] in short:
            return pid
        pid = int(stat[1][1])
    return None


def exit_status(pid: int) -> tuple[bool, int | None]:
    """Whether process ``pid`` has ended, and, while it is a zombie its parent has not
    collected yet, its exit status (negative: a signal)."""
    stat = _stat(pid)
    if stat is None:
        return True, None
    fields = stat[1]
    if fields[0] not in ("Z", "X"):
        return False, None
    try:
        return True, os.waitstatus_to_exitcode(int(fields[-1]))  # exit_code (Linux >= 3.5)
    except (ValueError, IndexError):
        return True, None


def reap() -> None:
    """Collect the exit status of this process's ended children (adopted orphans included)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def descendants(pid: int) -> list[psutil.Process]:
    """Every living process below ``pid`` (children, their children, ...). For this process
    with no child, none, at once (psutil's walk reads every process of the machine)."""
    if pid == os.getpid() and not _has_children():
        return []
    try:
        children: list[psutil.Process] = psutil.Process(pid).children(recursive=True)
        return children
    except psutil.Error:
        return []


def end_processes(procs: Iterable[psutil.Process], grace: float = GRACE) -> int:
    """End ``procs`` and whatever they started meanwhile; how many were still alive."""
    alive: dict[int, psutil.Process] = {}
    for proc in procs:
        alive[proc.pid] = proc
        for child in descendants(proc.pid):
            alive.setdefault(child.pid, child)
    if not alive:
        return 0
    procs_left = list(alive.values())
    # the application's own MPI files in /dev/shm: MPI_Finalize would have removed them
    shm_files = {f for proc in procs_left for f in mapped(f"/proc/{proc.pid}/maps")}
    for proc in procs_left:
        _signal(proc, signal.SIGTERM)
    _, still = psutil.wait_procs(procs_left, timeout=grace)
    for proc in still:
        _signal(proc, signal.SIGKILL)
    if still:
        psutil.wait_procs(still, timeout=grace)
        log.info("killed %d processes that outlived SIGTERM by %.1f s", len(still), grace)
    for path in shm_files:
        try:
            os.unlink(path)
        except OSError:
            pass  # finalized after all, or never ours
    return len(alive)


def _signal(proc: psutil.Process, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except psutil.Error:
        pass  # gone already, or not ours
