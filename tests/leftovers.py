"""What a test's programs leave behind: processes, and files in ``/dev/shm``.

Attribution never goes by name: a process is ours when it descends from a process we started
(or carries this test session's marker in its environment, for processes a batch system or
Parsl's ``LocalProvider`` detached from us), and a ``/dev/shm`` file is ours when one of our
processes had it mapped, or when its name carries a run prefix one of them was started with.
Other programs on the machine (other test sessions among them) are never looked at otherwise.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable

import psutil

SHM = "/dev/shm/"
#: the environment variable that marks every process this test session starts
MARKER_ENV = "RANKPOOL_TEST_SESSION"
_RUN_PREFIX = re.compile(r"rankpool-[0-9a-f]{8,32}")
#: multiprocessing's named semaphores: its resource tracker unlinks them once every process that
#: shares the tracker (pytest itself, for those of a library a test used) has exited
_TRACKED = "sem.mp-"
#: the files MPI libraries make for a process that initialised MPI: MPICH's, Open MPI 5's
#: (btl/sm) and 4's (btl/vader) shared-memory segments
_OWN_MPI = ("mpich_", "sm_segment.", "vader_segment.")


def descendants(pid: int) -> list[psutil.Process]:
    """Every live process below ``pid``."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def marked(marker: str) -> list[psutil.Process]:
    """Every process whose environment carries ``MARKER_ENV=marker`` (reads /proc, Linux)."""
    needle = f"{MARKER_ENV}={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(psutil.Process(int(entry)))
        except (OSError, psutil.NoSuchProcess):
            continue
    return found


def shm_names(procs: Iterable[psutil.Process]) -> set[str]:
    """Names in ``/dev/shm`` that ``procs`` have mapped, or whose run prefix their command
    lines name (a pool is started with ``--shared-memory rankpool-...``)."""
    names: set[str] = set()
    for proc in procs:
        try:
            with open(f"/proc/{proc.pid}/maps") as f:
                for line in f:
                    at = line.find(SHM)
                    name = line[at + len(SHM):].strip().removesuffix(" (deleted)")
                    if at >= 0 and not name.startswith(_TRACKED):
                        names.add(name)
            for arg in proc.cmdline():
                names.update(m.group(0) for m in _RUN_PREFIX.finditer(arg))
        except (OSError, psutil.Error):
            continue
    return names


def own_mpi_segments() -> list[str]:
    """Open MPI's segments in ``/dev/shm`` that this process maps."""
    return sorted(n for n in shm_names([psutil.Process()])
                  if n.startswith(_OWN_MPI) and not n.startswith("mpich_"))


def existing(names: Iterable[str]) -> list[str]:
    """Those of ``names`` still in ``/dev/shm``: exact names, and every file of a run prefix."""
    names = set(names)
    prefixes = {n for n in names if _RUN_PREFIX.fullmatch(n)}
    try:
        present = os.listdir(SHM)
    except OSError:
        return []
    return sorted(n for n in present
                  if n in names or any(n.startswith(p + "-") or n == p + ".host"
                                       for p in prefixes))


class Watch:
    """Follows the processes below ``pid`` (and, with ``marker``, those that carry it) while
    programs run, collecting the ``/dev/shm`` names they use; ``pid`` itself is not counted
    as left behind, its own mapped files are."""

    def __init__(self, pid: int, marker: str | None = None) -> None:
        self.pid = pid
        self.marker = marker
        self.procs: dict[int, psutil.Process] = {}
        self.shm: set[str] = set()
        self.first_seen: dict[str, str] = {}  # process or file -> the label current then

    def look(self, label: str = "") -> list[psutil.Process]:
        procs = descendants(self.pid)
        if self.marker:
            known = {p.pid for p in procs}
            procs += [p for p in marked(self.marker) if p.pid not in known and p.pid != self.pid]
        for proc in procs:
            if proc.pid not in self.procs:
                self.procs[proc.pid] = proc
                self.first_seen[f"process {proc.pid}"] = label
        own = {n for n in self._own() if not n.startswith(_OWN_MPI)}  # its MPI files: gone()
        for name in (shm_names(procs) | own) - self.shm:
            self.shm.add(name)
            self.first_seen[name] = label
        return procs

    def alive(self) -> list[psutil.Process]:
        """The processes seen so far that still run (a zombie has exited)."""
        left = []
        for proc in self.procs.values():
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(proc)
            except psutil.NoSuchProcess:
                continue
        return left

    def gone(self, timeout: float = 5.0) -> tuple[list[psutil.Process], list[str]]:
        """Wait up to ``timeout`` for every process seen to exit and their shm files to go;
        what is left of each."""
        deadline = time.monotonic() + timeout
        while True:
            # the watched process's own MPI files (mpi4py initialised MPI in it; MPICH names a
            # singleton's file after its pid) go at its exit, with its MPI_Finalize. A child
            # it forked maps them too until it execs or exits, where a look may have seen them
            own = {n for n in self._own() if n.startswith(_OWN_MPI)}
            procs = self.alive()
            files = [name for name in existing(self.shm) if name not in own]
            if (not procs and not files) or time.monotonic() > deadline:
                return procs, files
            time.sleep(0.05)

    def _own(self) -> set[str]:
        """The ``/dev/shm`` names the watched process itself maps."""
        try:
            return shm_names([psutil.Process(self.pid)])
        except psutil.NoSuchProcess:
            return set()
