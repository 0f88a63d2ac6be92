"""Seeing a spawned program end before ``MPI_Init``, which ``MPI_Comm_spawn`` never does.

MPICH's ``MPI_Comm_spawn`` returns once the spawned processes have connected to their parent
from inside ``MPI_Init``. A program that ends before (an exit at its top, an import error, a
missing library) leaves the call waiting for ever: it has no timeout, and nothing from inside
MPI interrupts it. Under Hydra the spawned processes run on the spawning rank's node, below the
pool's ``mpiexec``: MPICH 5's Hydra starts a new ``hydra_pmi_proxy`` for the spawned group
(seen in a pool), which forks the processes and exits once they have all ended, or forks them
from the node's existing proxy (seen with a bare ``mpiexec``). So a thread of the parent can
watch them without any MPI call: :class:`SpawnWatch` looks at the two levels below ``mpiexec``
(its proxies and their children), opens a pidfd on each process that appeared since the call
began, reads a spawned process's exit status while it is a zombie (when caught before its
proxy collects it), and calls its owner's ``on_ended`` when everything that appeared has ended
while the call has not returned. The owner can then only end the rank (see :mod:`.spawn`).

A new proxy is the sure sign: it lives from before its processes start until they have all
ended, however short their lives. Processes forked by an existing proxy are watched
themselves; one that starts and ends between two looks (every millisecond for the first half
second, then every 20 ms) is never seen, so a spawn of which fewer than ``count`` processes
were seen counts as ended once those are gone and nothing new appeared for
:data:`UNSEEN_AFTER` seconds (:data:`NOTHING_AFTER` when nothing appeared at all).

Which new processes are this spawn's: spawns *start* one at a time on a node (a
:class:`~.spawn_endings.Turn`, taken just before the call and given back as soon as all
``count`` processes were seen, a few milliseconds later), so whatever appears meanwhile is
this spawn's.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from ..apps.process_tree import child_pids, exit_status, process_name
from .hydra_notice import PROXY
from .spawn_endings import Turn

log = logging.getLogger(__name__)

#: seconds watched closely (a look every :data:`FIRST_LOOK` s) after the call starts
CLOSE_WATCH = 0.5
FIRST_LOOK = 1e-3
#: seconds between looks after that
LATER_LOOK = 0.02
#: seconds without a new process after which processes never seen count as ended
UNSEEN_AFTER = 5.0
#: the same when no process of the spawn was seen at all
NOTHING_AFTER = 30.0
#: seconds the call may take to return after its processes ended (they ended right after
#: ``MPI_Init``, not before it) before it counts as never returning
RETURN_GRACE = 0.2


class Ending(NamedTuple):
    """A spawn whose processes all ended before it returned: how many were asked for, how
    many were seen, and the exit statuses read (negative: a signal; those reaped before they
    could be read are missing)."""

    asked: int
    seen: int
    statuses: tuple[int, ...]


class SpawnWatch:
    """Watch the ``count`` processes that ``MPI_Comm_spawn`` starts below process ``top``
    while the call runs (``with SpawnWatch(...): comm.Spawn(...)``); ``on_ended`` is called
    from the watching thread when everything that appeared ended before the call returned.
    ``top`` is Hydra's ``mpiexec``, whose children are proxies and theirs the spawned
    processes, or, ``flat``, a launcher daemon whose children are the spawned processes
    (Open MPI's ``prterun`` or ``prted``)."""

    def __init__(self, top: int, count: int, on_ended: Callable[[Ending], None], *,
                 flat: bool = False) -> None:
        self.top = top
        self.flat = flat
        self.count = count
        self.on_ended = on_ended
        self.turn = Turn(f"rankpool-spawn-start-{top}")
        self.before: set[int] = set()
        self.seen: dict[int, int | None] = {}  # pid -> pidfd (None: none could be opened)
        self.started: set[int] = set()  # of the seen: started by mpiexec (the rest: spawned)
        self.proxies: set[int] = set()  # of those: seen as Hydra's proxy (a helper may not be)
        self.statuses: dict[int, int] = {}
        self.gone: set[int] = set()
        self.returned = threading.Event()
        self.wake_r, self.wake_w = os.pipe()
        self.epoll = select.epoll()
        self.epoll.register(self.wake_r, select.EPOLLIN)
        self.thread = threading.Thread(target=self._watch, name="rankpool-spawn-watch",
                                       daemon=True)

    def __enter__(self) -> SpawnWatch:
        self.turn.take()
        self.before = set(self._below())
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.returned.set()
        os.write(self.wake_w, b"x")
        self.thread.join()
        self.turn.give_back()
        for fd in self.seen.values():
            if fd is not None:
                os.close(fd)
        self.epoll.close()
        os.close(self.wake_r)
        os.close(self.wake_w)

    @property
    def spawned(self) -> int:
        """How many spawned processes were seen."""
        return len(self.seen) - len(self.started)

    def _below(self) -> dict[int, int]:
        """The processes one and two levels below ``top`` (one: ``flat``) -> their parents."""
        found: dict[int, int] = {}
        for proxy in child_pids(self.top) or ():
            found[proxy] = self.top
            for pid in () if self.flat else child_pids(proxy) or ():
                found[pid] = proxy
        return found

    def _watch(self) -> None:
        start = last_new = time.monotonic()
        while not self.returned.is_set():
            now = time.monotonic()
            self._note_ends()  # first: a zombie's status is there only until it is collected
            if self.spawned < self.count and self._look():
                last_new = now
                if self.spawned >= self.count:
                    self.turn.give_back()  # all appeared: the next spawn may start
            if len(self.gone) == len(self.seen) and self._over(now - last_new):
                if not self.returned.wait(RETURN_GRACE):
                    self.turn.give_back()
                    self.on_ended(Ending(self.count, self.spawned,
                                         tuple(self.statuses[p] for p in sorted(self.statuses))))
                return
            close = now - start < CLOSE_WATCH and self.spawned < self.count
            self.epoll.poll(FIRST_LOOK if close else LATER_LOOK)

    def _over(self, quiet: float) -> bool:
        """Whether the spawn has ended, everything seen being gone and nothing new for
        ``quiet`` seconds."""
        if self.proxies or self.spawned >= self.count:
            return True
        return quiet > (UNSEEN_AFTER if self.seen else NOTHING_AFTER)

    def _look(self) -> bool:
        """Take the new processes below ``top``; True if there were any."""
        new = {pid: parent for pid, parent in self._below().items()
               if pid not in self.before and pid not in self.seen}
        for pid, parent in new.items():
            try:
                fd: int | None = os.pidfd_open(pid)
            except (OSError, AttributeError):
                fd = None
            self.seen[pid] = fd
            if parent == self.top and not self.flat:
                self.started.add(pid)
            if fd is not None:
                self.epoll.register(fd, select.EPOLLIN)
        for pid in self.started - self.proxies - self.gone:
            if process_name(pid) == PROXY[:15]:  # (once it has exec'd: a fork is named mpiexec)
                self.proxies.add(pid)
        return bool(new)

    def _note_ends(self) -> None:
        """Note which seen processes ended, and the statuses still readable."""
        for pid in self.seen:
            if pid in self.gone:
                continue
            over, status = exit_status(pid)
            if over:
                self.gone.add(pid)
                if status is not None and pid not in self.started:
                    self.statuses[pid] = status
                fd = self.seen[pid]
                if fd is not None:
                    self.epoll.unregister(fd)
