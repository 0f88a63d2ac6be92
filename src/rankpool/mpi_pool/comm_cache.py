"""Communicators of multi-rank tasks, kept for the next task on the same ranks.

Making a task's communicator (``MPI_Comm_create_group``) is a collective among the task's ranks
of several message rounds; a stream of tasks on the same ranks would pay it every time. Rank 0
keeps a directory of the rank sets it used lately (:class:`CommDirectory`) and gives each set
an id; every item of a multi-rank task carries its set's id, and each member keeps the
communicator it made for that id (:class:`CommCache`).

Every member must take the same decision, make or reuse, or the collective deadlocks. Members
never decide on their own: an id is made exactly once, by the first task rank 0 sends with it,
which every member runs before any later task of the same ranks (rank 0 sends a rank set's
tasks to all of its members in one order). When rank 0 drops a set from its directory (the
least recently used, past ``size`` sets), it gives the set's id to its members to free with
their next work; a set that comes back gets a new id, made afresh. Id 0 means "made for this
task and freed after it", the path of a pool that lost a rank (its rank sets change) and of a
directory of size 0.

A task gets a handle on which ``Free`` does nothing: the communicator belongs to the pool.
What a task leaves on it (an error handler, attributes, a message nobody received) is there
for the next task on the same ranks, as it is on ``COMM_WORLD``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from mpi4py import MPI

from .subcomms import make_communicator, task_communicator

#: rank sets rank 0 keeps communicators for (each member holds at most this many)
DEFAULT_SIZE = 32


class CommDirectory:
    """Rank 0's side: which rank sets have a communicator, under which id."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self._ids: OrderedDict[tuple[int, ...], int] = OrderedDict()
        self._next = 1
        self._release: dict[int, list[int]] = {}

    def id_for(self, ranks: tuple[int, ...]) -> int:
        """The id of the communicator of ``ranks`` (a new one if it has none)."""
        if self.size <= 0:
            return 0
        cid = self._ids.get(ranks)
        if cid is not None:
            self._ids.move_to_end(ranks)
            return cid
        cid = self._ids[ranks] = self._next
        self._next += 1
        if len(self._ids) > self.size:
            self._drop(*self._ids.popitem(last=False))
        return cid

    def releases(self, rank: int) -> tuple[int, ...]:
        """Ids ``rank`` is to free (sent with its next work)."""
        if not self._release:
            return ()
        return tuple(self._release.pop(rank, ()))

    def stop(self) -> None:
        """No more kept communicators (a rank died: the rank sets change): every member frees
        what it holds with its next work, and later tasks make their own."""
        for ranks, cid in list(self._ids.items()):
            self._drop(ranks, cid)
        self._ids.clear()
        self.size = 0

    def _drop(self, ranks: tuple[int, ...], cid: int) -> None:
        for rank in ranks:
            self._release.setdefault(rank, []).append(cid)


#: handles of the communicators this process keeps
_KEPT: set[int] = set()


class _PoolOwned(MPI.Intracomm):
    """A kept communicator as a task sees it: ``Free`` leaves it to the pool. Communicators a
    task derives from it (``Dup``, ``Split``, ...) come out of this class too, and free as
    usual."""

    def Free(self) -> None:  # noqa: N802 (MPI's name)
        if self.handle not in _KEPT:
            super().Free()

    free = Free


class CommCache:
    """A worker rank's side: the communicators it made, by id."""

    def __init__(self) -> None:
        self._comms: dict[int, MPI.Intracomm] = {}

    def __len__(self) -> int:
        return len(self._comms)

    @contextmanager
    def communicator(self, pool: MPI.Intracomm, group: MPI.Group, ranks: Sequence[int],
                     tag: int, cid: int, from_group: bool = False) -> Iterator[MPI.Intracomm]:
        """The communicator of a task on ``ranks`` under id ``cid`` (see the module)."""
        if cid == 0 or len(ranks) == 1:
            with task_communicator(pool, group, ranks, tag, from_group) as sub:
                yield sub
            return
        comm = self._comms.get(cid)
        if comm is None:
            comm = self._comms[cid] = make_communicator(pool, group, ranks, tag, from_group)
            _KEPT.add(comm.handle)
        yield _PoolOwned(comm)

    def release(self, cids: Sequence[int]) -> None:
        """Free the communicators of ``cids`` (rank 0 dropped their rank sets)."""
        for cid in cids:
            comm = self._comms.pop(cid, None)
            if comm is not None and comm != MPI.COMM_NULL:
                _KEPT.discard(comm.handle)
                try:
                    comm.Free()
                except MPI.Exception:
                    pass

    def close(self) -> None:
        self.release(list(self._comms))
