"""Seeing worker ranks die: rank 0 watches the keepers of the ranks on its node.

Each pool rank runs under a keeper (:mod:`.keeper`) that outlives it just long enough to leave
a death note. :class:`DeathWatch` holds a pidfd per watched keeper in one ``epoll`` set, whose
single descriptor becomes readable when any of them exits, so the owner can sleep on it beside
its other descriptors and learn of a death at once; :meth:`DeathWatch.deaths` then reads the
notes. Without pidfds (an old kernel) the keepers are polled with ``kill(pid, 0)``. Keepers
on other nodes send their notes to rank 0 instead (:mod:`.far_notes`), through a socket in the
same ``epoll`` set.

A keeper that exits without a note (it was killed itself, which kills its rank too) still
counts as its rank's death, with an unknown status.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import tempfile
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from ..errors import SpawnedProgramLost, WorkerLost
from .far_notes import NoteBox

log = logging.getLogger(__name__)

#: seconds a dead keeper's note may take to appear (it writes it before exiting: a margin)
NOTE_WAIT = 0.2


class Death(NamedTuple):
    """A worker rank that died: how (``status``: exit status, negative for a signal, None when
    unknown), the last task it started (None: none, or unknown), whether it was still
    running it, and why, when the rank ended itself and told its keeper (``cause``: see
    :func:`lost_error`)."""

    rank: int
    host: str
    pid: int
    status: int | None
    task: int | None
    running: bool = False
    cause: Mapping[str, Any] | None = None


def lost_error(task_id: int, death: Death, what: str) -> WorkerLost:
    """The error of task ``task_id`` that lost its rank to ``death`` (``what``: when, as
    :class:`~rankpool.errors.WorkerLost` says it): the rank's own account when it ended itself
    while running that task (a spawn whose program ended before ``MPI_Init``)."""
    spawn = death.cause.get("spawn") if death.cause and death.task == task_id else None
    if isinstance(spawn, dict):
        program, count, codes = spawn.get("program"), spawn.get("count"), spawn.get("statuses")
        if isinstance(program, str) and isinstance(count, int) and isinstance(codes, list):
            return SpawnedProgramLost(task_id, death.rank, death.host, death.pid, death.status,
                                      program, count,
                                      tuple(c for c in codes if isinstance(c, int)))
    return WorkerLost(task_id, death.rank, death.host, death.pid, death.status, what)


class Identity(NamedTuple):
    """A rank's process and its keeper's (0: it has none)."""

    pid: int
    keeper: int


def note_dir(token: str) -> str:
    """The node-local directory where keepers of the pool with ``token`` leave their notes."""
    return os.path.join(tempfile.gettempdir(), f"rankpool-{token}")


class DeathWatch:
    """Watches the keepers of ``ranks`` (rank -> identity) on this host, and takes the notes
    of the keepers of ``far`` ranks, on other nodes (see :mod:`.far_notes`)."""

    def __init__(self, ranks: Mapping[int, Identity], directory: str, host: str,
                 far: Mapping[int, Identity] | None = None) -> None:
        self.directory = directory
        self.host = host
        self.ranks = {r: ident for r, ident in ranks.items() if ident.keeper}
        self.by_fd: dict[int, int] = {}
        self.polled: set[int] = set()
        epoll = self.epoll = select.epoll() if hasattr(select, "epoll") else None
        for rank, ident in self.ranks.items():
            fd = self._pidfd(ident.keeper)
            if fd is None or epoll is None:  # (no pidfd without epoll)
                self.polled.add(rank)
            else:
                self.by_fd[fd] = rank
                epoll.register(fd, select.EPOLLIN)
        self.box: NoteBox | None = None
        far_pids = {r: ident.pid for r, ident in (far or {}).items() if ident.keeper}
        if far_pids and epoll is not None:
            try:
                self.box = NoteBox(epoll, far_pids)
            except OSError as exc:
                log.warning("cannot open the port for the death notes of ranks on other "
                            "nodes (%s): their deaths will not be seen", exc)

    @property
    def box_address(self) -> str:
        """Where the keepers of ranks on other nodes send their notes ("": nowhere)."""
        return self.box.address if self.box is not None else ""

    def _pidfd(self, pid: int) -> int | None:
        if self.epoll is None or not hasattr(os, "pidfd_open"):
            return None
        try:
            return os.pidfd_open(pid)
        except OSError:  # gone already (kill(pid, 0) will say so), or no pidfds here
            return None

    def fileno(self) -> int | None:
        """A descriptor that is readable when a watched keeper exited (None: poll instead)."""
        watched = self.by_fd or self.box is not None
        return self.epoll.fileno() if self.epoll is not None and watched else None

    @property
    def watching(self) -> int:
        return len(self.by_fd) + len(self.polled) + (len(self.box.ranks) if self.box else 0)

    def deaths(self) -> list[Death]:
        """The watched ranks that died since the last call (non-blocking)."""
        dead: list[int] = []
        far: list[Death] = []
        epoll, box = self.epoll, self.box
        if (self.by_fd or box) and epoll is not None:  # (descriptors are watched with epoll)
            for fd, _ in epoll.poll(0):
                if box is not None and box.owns(fd):
                    far.extend(_far_death(note) for note in box.ready(fd))
                    continue
                rank = self.by_fd.pop(fd)
                epoll.unregister(fd)
                os.close(fd)
                dead.append(rank)
            if box is not None:
                box.expire()
        for rank in list(self.polled):
            try:
                os.kill(self.ranks[rank].keeper, 0)
            except ProcessLookupError:
                self.polled.discard(rank)
                dead.append(rank)
            except PermissionError:
                pass
        return [self._death(rank) for rank in sorted(dead)] + far

    def _death(self, rank: int) -> Death:
        pid = self.ranks[rank].pid
        path = os.path.join(self.directory, f"{pid}.json")
        deadline = time.monotonic() + NOTE_WAIT
        while True:
            try:
                with open(path, encoding="utf-8") as fh:
                    note = json.load(fh)
                os.unlink(path)
                break
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    log.warning("rank %d (pid %d) died without a note from its keeper", rank, pid)
                    return Death(rank, self.host, pid, None, None)
                time.sleep(0.005)
        return _from_note(note, rank, self.host, pid)

    def end(self, rank: int) -> bool:
        """Kill a watched rank's process (its keeper then reports its death); True if sent."""
        ident = self.ranks.get(rank)
        if ident is None:
            return False
        try:
            os.kill(ident.pid, signal.SIGKILL)
        except OSError:
            return False
        return True

    def close(self) -> None:
        if self.box is not None:
            self.box.close()
        for fd in self.by_fd:
            os.close(fd)
        self.by_fd.clear()
        if self.epoll is not None:
            self.epoll.close()
        try:
            for name in os.listdir(self.directory):
                os.unlink(os.path.join(self.directory, name))
            os.rmdir(self.directory)
        except OSError:
            pass


def _far_death(note: Mapping[str, Any]) -> Death:
    """The death a checked note from another node tells of (it names its node)."""
    host = note.get("host")
    return _from_note(note, note["rank"], host if isinstance(host, str) else "another node",
                      note["pid"])


def _from_note(note: Mapping[str, Any], rank: int, host: str, pid: int) -> Death:
    status, task, cause = note.get("status"), note.get("task"), note.get("cause")
    return Death(rank, host, pid, status if isinstance(status, int) else None,
                 task if isinstance(task, int) else None, note.get("running") is True,
                 cause if isinstance(cause, dict) else None)
