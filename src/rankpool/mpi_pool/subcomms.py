"""MPI plumbing shared by the manager (rank 0) and the workers.

Messages between them are pickled Python lists (small) followed by raw MPI buffers for the
large out-of-band frames (NumPy data), so array bytes are never copied into a pickle. Items
travel as plain tuples in :class:`WorkItem` / :class:`Done` field order (a named tuple costs
~6x more to pickle and unpickle) and :func:`receive` gives them their names back:

    manager_dispatch ──WORK──▶ worker_receive      [WorkItem or run of them, ...] + DATA buffers
    manager_receive  ◀──DONE── worker_report       [Done, ...], value columns + DATA buffers
    manager_stop     ──STOP──▶ worker_receive
    manager_cancel   ──CANCEL─▶ worker_receive     task ids to drop if not started
    manager_lost     ──LOST───▶ worker_receive     ranks that died, and the tasks of theirs
                                                   (multi-rank ones too) to drop if not started

A DONE message is a :class:`Report`: the rank's finished tasks, the task it is about to start
(announced when the rank had not reported for a while, so rank 0 learns that a long task
started without a message per task), the queued tasks it dropped on a CANCEL, whether the
rank rings rank 0's doorbell with each report from now on (see :mod:`.worker`), and its
finished 1-rank tasks that returned a value without buffers, as two columns (task ids, pickled
values) and the seconds they ran: a flood's results, with no tuple per task on either side.

Every send is non-blocking and kept in an :class:`Outbox` until MPI has taken it, so neither
side ever blocks on a peer that is busy running user code. Where these hops sit on the whole
data path: ``docs/internals.md``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import IntEnum
from itertools import repeat
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np
from mpi4py import MPI

from ..protocol.wire import Buffer
from .task_setting import TaskSetting

#: MPI's guaranteed minimum for the tag upper bound
TAG_LIMIT = 32767
#: most bytes of task data or values in one WORK or DONE message, as far as its tasks allow:
#: a larger message waits for its receiver to take it (MPI's rendezvous protocol; MPICH's
#: eager limit here is 8 KB, Open MPI's shared-memory one 4 KiB by default), and the sender
#: then polls until it does instead of sleeping; several smaller messages each leave at once
MESSAGE_BYTES = 4000


class Tag(IntEnum):
    WORK = 1
    DONE = 2
    DATA = 3
    STOP = 4
    CANCEL = 5
    LOST = 6


class WorkItem(NamedTuple):
    """One task as one worker rank receives it."""

    task_id: int
    ranks: tuple[int, ...]        # pool ranks of the task, ascending
    results_all: bool
    walltime: float | None
    fn_digest: bytes
    fn: bytes
    data: bytes
    nbuf: int                     # DATA buffers that follow the WORK message, in item order
    setting: TaskSetting | None = None   # env and cwd around the task (resource keys)
    comm_id: int = 0              # its ranks' kept communicator (0: made for it; comm_cache)
    release: tuple[int, ...] = () # kept communicators this rank frees first (comm_cache)


class Done(NamedTuple):
    """What one rank reports for one task."""

    task_id: int
    rank: int                     # rank in the task's communicator
    ok: bool
    data: bytes
    nbuf: int
    start: float
    end: float


_nbuf_of = itemgetter(Done._fields.index("nbuf"))  # of a Done as a plain tuple


class Report(NamedTuple):
    """One DONE message: finished tasks, the one starting now (if announced), dropped ones."""

    done: list[tuple[Any, ...]]   # Done fields, as the plain tuples that travelled (rank 0
                                  # names only those off its common path: ``Done._make``)
    starting: tuple[int, ...]     # the task it starts next (if announced), and the tasks a
                                  # CANCEL found started or done
    dropped: tuple[int, ...]      # tasks it held and dropped, unstarted, on a CANCEL
    rings: bool = False           # it rings rank 0 with each report until it runs dry
    #: 1-rank tasks that returned a value without buffers (not in ``done``): their ids, their
    #: pickled values in the same order, and the seconds they ran in all
    values: tuple[list[int], list[bytes], float] = ([], [], 0.0)


class Outbox:
    """Non-blocking sends kept alive until complete."""

    __slots__ = ("comm", "pending", "dests")

    def __init__(self, comm: MPI.Comm) -> None:
        self.comm = comm
        self.pending: list[MPI.Request] = []
        self.dests: list[int] = []  # each pending send's destination

    def send(self, obj: Any, dest: int, tag: int, buffers: Sequence[Buffer] = ()) -> None:
        try:
            self.pending.append(self.comm.isend(obj, dest, tag))
            self.dests.append(dest)
            for buf in buffers:
                self.pending.append(self.comm.Isend([buf, MPI.BYTE], dest, Tag.DATA))
                self.dests.append(dest)
        except MPI.Exception as exc:  # ``dest`` died (ULFM says so): its death is handled
            if not acknowledge_failures(self.comm, exc):
                raise

    def poll(self) -> bool:
        """Drop completed sends; True while some are still in progress."""
        if not self.pending:
            return False
        try:
            done = MPI.Request.Testall(self.pending)
        except MPI.Exception as exc:  # a send to a rank that died (ULFM): drop what failed
            if not acknowledge_failures(self.comm, exc):
                raise
            done = self._test_each()
        if done:
            self.pending.clear()
            self.dests.clear()
        return bool(self.pending)

    def _test_each(self) -> bool:
        kept = []
        for request, dest in zip(self.pending, self.dests):
            try:
                if not request.Test():
                    kept.append((request, dest))
            except MPI.Exception:
                pass
        self.pending = [r for r, _ in kept]
        self.dests = [d for _, d in kept]
        return not kept

    def forget(self, dest: int) -> None:
        """Stop waiting for the sends to ``dest``, a rank that died: they never complete."""
        kept = [(r, d) for r, d in zip(self.pending, self.dests) if d != dest]
        self.pending = [r for r, _ in kept]
        self.dests = [d for _, d in kept]

    def flush(self, timeout: float | None = None) -> bool:
        """Wait (polling) for every send to complete; False if ``timeout`` ran out first."""
        import time
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(1e-4)
        return True


#: error classes of an MPI with ULFM (Open MPI 5 ``--with-ft ulfm``) that mean "a process died"
_FAILURE_CLASSES = frozenset(getattr(MPI, name) for name in
                             ("ERR_PROC_FAILED", "ERR_PROC_FAILED_PENDING", "ERR_REVOKED")
                             if hasattr(MPI, name))


def acknowledge_failures(comm: MPI.Comm, exc: MPI.Exception) -> bool:
    """Whether ``exc`` says a process of ``comm`` died (ULFM); if so, acknowledge the deaths
    known so far, so that receives from any source work again. Rank 0 learns who died, and how,
    from the keepers (:mod:`.deaths`)."""
    if exc.Get_error_class() not in _FAILURE_CLASSES:
        return False
    acknowledge(comm)
    return True


def has_ulfm() -> bool:
    """Whether this MPI tells survivors of a process failure (Open MPI 5 with ULFM)."""
    return bool(_FAILURE_CLASSES) and MPI.Get_library_version().startswith("Open MPI")


def acknowledge(comm: MPI.Comm) -> None:
    """Acknowledge the process failures of ``comm`` known so far, where the MPI has ULFM."""
    try:
        comm.Ack_failed()
    except (MPI.Exception, NotImplementedError, AttributeError):
        pass


def receive(comm: MPI.Comm, source: int, tag: int) -> tuple[list[WorkItem], list[Buffer]]:
    """Receive a probed WORK message from ``source`` and the DATA buffers its items announce
    (items travel as plain tuples and come back as :class:`WorkItem`; a run of them, as
    :func:`expand` reads it)."""
    got = comm.recv(source=source, tag=tag)
    if any(type(item[0]) is list for item in got):
        items = [named for item in got for named in expand(item)]
    else:  # WorkItem._make without its Python frame and length check (rank 0 sends whole items)
        items = list(map(_named, repeat(WorkItem), got))
    return items, _receive_buffers(comm, source, sum(item.nbuf for item in items))


def expand(item: tuple[Any, ...]) -> list[WorkItem]:
    """A WORK message's entry as the items it stands for: one item, or a *run*, the fields of
    tasks that share every field but their id and data (1-rank tasks without buffers), with
    a list of ids in place of the id and a list of data in place of the data. A run's
    communicators to free (its last field) go with its first task."""
    if type(item[0]) is not list:
        return [_named(WorkItem, item)]
    ids, ranks, results_all, walltime, digest, fn, datas, _, setting, comm_id, release = item
    items = list(map(_named, repeat(WorkItem), zip(
        ids, repeat(ranks), repeat(results_all), repeat(walltime), repeat(digest), repeat(fn),
        datas, repeat(0), repeat(setting), repeat(comm_id), repeat(()))))
    if release and items:
        items[0] = items[0]._replace(release=release)
    return items


_named = tuple.__new__


def receive_report(comm: MPI.Comm, source: int,
                   deadline: float | None = None) -> tuple[Report, list[Buffer]]:
    """Receive a probed DONE message from ``source`` (sent as plain tuples) and its buffers.

    ``deadline`` (``time.monotonic``): ``source`` died, so its buffers may never come whole;
    raise ``TimeoutError`` when they have not by then."""
    done, starting, dropped, rings, values = comm.recv(source=source, tag=Tag.DONE)
    return (Report(done, starting, dropped, rings, values),
            _receive_buffers(comm, source, sum(map(_nbuf_of, done)), deadline))


def _receive_buffers(comm: MPI.Comm, source: int, count: int,
                     deadline: float | None = None) -> list[Buffer]:
    buffers: list[Buffer] = []
    status = MPI.Status()
    for _ in range(count):
        if deadline is None:
            msg = comm.Mprobe(source=source, tag=Tag.DATA, status=status)
        else:
            msg = _improbe_until(comm, source, status, deadline)
        buf = np.empty(status.Get_count(MPI.BYTE), dtype=np.uint8)
        if deadline is None:
            msg.Recv([buf, MPI.BYTE])
        else:
            request = msg.Irecv([buf, MPI.BYTE])
            while not request.Test():
                _pause_until(deadline)
        buffers.append(buf.data)  # the array's memoryview
    return buffers


def _improbe_until(comm: MPI.Comm, source: int, status: MPI.Status,
                   deadline: float) -> MPI.Message:
    while True:
        msg = comm.Improbe(source=source, tag=Tag.DATA, status=status)
        if msg is not None:
            return msg
        _pause_until(deadline)


def _pause_until(deadline: float) -> None:
    import time
    if time.monotonic() > deadline:
        raise TimeoutError("a dead rank's message did not arrive whole")
    time.sleep(1e-4)


class Topology(NamedTuple):
    """Where the pool's ranks live, as rank 0 sees it."""

    nodes: list[list[int]]        # worker ranks per node (rank 0 excluded)
    hosts: list[str]              # host name per node
    host_of: dict[int, str]       # every rank's host


def discover_topology(comm: MPI.Intracomm) -> Topology:
    """Group ranks by shared-memory node (collective over ``comm``).

    Nodes are told apart by ``Split_type(COMM_TYPE_SHARED)``, not by host name, so fake
    nodes on one host (a one-machine Slurm) count as separate nodes.
    """
    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        leader = local.allreduce(comm.Get_rank(), op=MPI.MIN)
    finally:
        local.Free()
    info = comm.allgather((leader, socket.gethostname()))
    by_leader: dict[int, list[int]] = {}
    host_of: dict[int, str] = {}
    for rank, (lead, host) in enumerate(info):
        by_leader.setdefault(lead, []).append(rank)
        host_of[rank] = host
    leaders = sorted(by_leader)
    nodes = [[r for r in by_leader[lead] if r != 0] for lead in leaders]
    hosts = [host_of[lead] for lead in leaders]
    return Topology(nodes, hosts, host_of)


def make_communicator(pool: MPI.Intracomm, group: MPI.Group, ranks: Sequence[int], tag: int,
                      from_group: bool = False) -> MPI.Intracomm:
    """A communicator of ``ranks`` of the pool (collective over them: ``tag`` and
    ``from_group`` the same on each); see :func:`task_communicator`."""
    sub_group = group.Incl(list(ranks))
    try:
        if from_group:
            return MPI.Intracomm.Create_from_group(sub_group, f"rankpool.task.{tag}")
        return pool.Create_group(sub_group, tag % TAG_LIMIT)
    finally:
        sub_group.Free()


@contextmanager
def task_communicator(pool: MPI.Intracomm, group: MPI.Group, ranks: Sequence[int],
                      tag: int, from_group: bool = False) -> Iterator[MPI.Intracomm]:
    """The communicator of one task, made by its ranks only and freed afterwards.

    A 1-rank task gets ``COMM_SELF``. ``tag`` must be the same on every member, and so must
    ``from_group``: made from the group alone (``MPI_Comm_create_from_group``), not from the
    pool's communicator, which ULFM refuses to derive communicators from once a rank died.
    """
    if len(ranks) == 1:
        yield MPI.COMM_SELF
        return
    sub = make_communicator(pool, group, ranks, tag, from_group)
    try:
        yield sub
    finally:
        if sub != MPI.COMM_NULL:
            try:
                sub.Free()
            except MPI.Exception:
                pass  # the task freed it itself
