"""The processes an MPI application task started, and how they are ended.

A launcher (``mpiexec``, ``srun``) starts helpers that put their ranks in sessions of their
own, so a process group does not hold an application: its processes are found by parentage
instead (``psutil``), and ended together: ``SIGTERM`` first, so that a launcher can take its
remote ranks down with it, then ``SIGKILL`` for whatever is left after ``grace`` seconds.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterable

import psutil

log = logging.getLogger(__name__)

#: seconds between SIGTERM and SIGKILL
GRACE = 2.0


def descendants(pid: int, exclude: Iterable[int] = ()) -> list[psutil.Process]:
    """Every living process below ``pid`` (children, their children, ...), except the
    subtrees rooted at ``exclude``."""
    skip = set(exclude)
    try:
        root = psutil.Process(pid)
        children = root.children()
    except psutil.Error:
        return []
    found: list[psutil.Process] = []
    stack = [c for c in children if c.pid not in skip]
    while stack:
        proc = stack.pop()
        found.append(proc)
        try:
            stack.extend(c for c in proc.children() if c.pid not in skip)
        except psutil.Error:
            pass
    return found


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
    for proc in procs_left:
        _signal(proc, signal.SIGTERM)
    _, still = psutil.wait_procs(procs_left, timeout=grace)
    for proc in still:
        _signal(proc, signal.SIGKILL)
    if still:
        psutil.wait_procs(still, timeout=grace)
        log.info("killed %d processes that outlived SIGTERM by %.1f s", len(still), grace)
    return len(alive)


def _signal(proc: psutil.Process, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except psutil.Error:
        pass  # gone already, or not ours
