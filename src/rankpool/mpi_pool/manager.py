"""Rank 0 of a pool: place tasks on worker ranks and gather their outcomes.

The manager is a progress engine with no thread of its own: its owner (the pool program's
loop, or the ``CommExecutor`` thread on root) calls :meth:`Manager.submit_many` and
:meth:`Manager.progress` and takes what finished with ``take_completed`` (of
:class:`~.outcomes.TaskOutcomes`).
One ``progress`` call is five non-blocking steps, then a poll of the outbox::

    manager_receive   Iprobe for DONE reports, combine each task's ranks into one Result
    check_deadlines   grace periods after a rank failed, walltimes: fail the task, mark stuck ranks
    check_slow        hold back ranks whose current task has run past ``slow_after``
    check_depth       queue as many 1-rank tasks per rank as their run times call for
    manager_dispatch  ask the scheduler what can start, send each rank its items (see
                      :mod:`.work_messages`: 1-rank tasks of one function and spec without
                      buffers as one run, in messages MPI sends at once)
    outbox.poll       complete the non-blocking sends that finished

Where this sits on the data path: ``docs/internals.md``. How a task's ranks bring it to an
end (their reports combined, deadlines) is :mod:`.outcomes`, and what a rank that died costs
:mod:`.rank_losses`: the manager is built on their :class:`~.rank_losses.RankLosses`.

A task *starts* when its rank announces it (see :mod:`.worker`) or, for a multi-rank or
exclusive task, when it is dispatched (its ranks are committed to it); :meth:`Manager.take_started`
gives the owner those still running after a delay, for their futures to become RUNNING.
:meth:`Manager.manager_cancel` drops cancelled tasks that have not started: here, or on the
rank that holds them (``CANCEL``; the rank reports them dropped, or started), and answers for
each (see :mod:`rankpool.frontends.cancelling`).

A worker rank runs its 1-rank tasks one after another, so a task queued behind a long one
waits for it. Rank 0 cannot see a task start, but a rank that has reported nothing for
``slow_after`` seconds since it was last between tasks (it reported, or was sent work while
holding none) is inside one task that long: it is *held back*, and no more 1-rank tasks are
queued on it until it reports again. What was queued on it before stays there.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable, Sequence
from itertools import groupby
from operator import itemgetter
from typing import Any

from mpi4py import MPI

from ..errors import InsufficientRanks
from ..protocol.batches import Task
from ..protocol.result_batches import Outcome, Result
from ..protocol.wire import Buffer
from ..task.resources import DeviceCapacity, Spec
from .comm_cache import DEFAULT_SIZE as COMM_CACHE
from .comm_cache import CommDirectory
from .deaths import Death
from .doorbell import Doorbell
from .outcomes import Running
from .placement.scheduler import DEFAULT_DEPTH, DEFAULT_LEND, Scheduler, Shape
from .prefetch import Prefetch
from .rank_losses import RankLosses
from .subcomms import Outbox, Tag, Topology, acknowledge_failures, receive_report
from .trace import TraceRecorder
from .work_messages import ITEM_BYTES, TaskFields, WorkMessages, plain_run

log = logging.getLogger(__name__)

#: DONE messages taken per progress call, so dispatch is never starved by a flood of reports
RECEIVE_BURST = 64
#: seconds a rank may stay inside one task before no more 1-rank tasks are queued behind it
SLOW_AFTER = 0.5
#: seconds between two looks for such ranks
_SLOW_CHECK = 0.1
#: most 1-rank tasks out for which :meth:`Manager.rung_when_done` looks at their ranks
_FEW = 64


class Manager(RankLosses):
    """Places tasks on the worker ranks of ``comm`` (this process is its rank 0)."""

    def __init__(self, comm: MPI.Intracomm, topology: Topology, *, depth: int = DEFAULT_DEPTH,
                 lend: int = DEFAULT_LEND, grace: float = 5.0, trace: bool = False,
                 device_ranks: Sequence[Sequence[int]] = (),
                 slow_after: float = SLOW_AFTER, bell: Doorbell | None = None,
                 near: Sequence[int] = (), keep_sent: bool = False,
                 comm_cache: int = COMM_CACHE) -> None:
        """``device_ranks``: the worker ranks of each node that own an accelerator; ``lend``:
        times a reserved rank may be lent per reservation (see :mod:`.placement.scheduler`);
        ``slow_after``: see the module docstring; ``bell``: rank 0's doorbell, used to ring
        the worker ranks ``near`` (on this node) when they are sent work while idle;
        ``keep_sent``: keep every task sent to ranks until it ends, so that those a dead
        rank never started can run elsewhere (see :meth:`manager_lost`); ``comm_cache``: rank
        sets whose communicators the workers keep (see :mod:`.comm_cache`)."""
        if comm.Get_rank() != 0:
            raise ValueError("the manager must be rank 0 of the pool communicator")
        self.comm = comm
        self.topology = topology
        self.grace = grace
        #: the depth, at most ``depth``, that the tasks' run times call for
        self.prefetch = Prefetch(depth)
        self.scheduler = Scheduler(topology.nodes, self.prefetch.depth,
                                   [r for n in device_ranks for r in n], lend=lend)
        self.devices = DeviceCapacity(sum(map(len, device_ranks)),
                                      max(map(len, device_ranks), default=0))
        self.worker_ranks = [r for node in topology.nodes for r in node]
        self.worker_set = frozenset(self.worker_ranks)
        self.widest = len(self.worker_ranks)
        self.largest_node = max((len(n) for n in topology.nodes), default=0)
        self.outbox = Outbox(comm)
        self.tasks: dict[int, Task] = {}          # queued here, not yet on ranks
        self.running: dict[int, Running] = {}
        self.single: dict[int, int] = {}          # 1-rank shared tasks on ranks: task -> rank
        self.trace = TraceRecorder(topology.host_of) if trace else None
        self.deadlines: list[tuple[float, int]] = []
        self.stuck: dict[int, int] = {}           # rank -> task it never came back from
        self.lost: dict[int, Death] = {}          # worker ranks that died
        self.comms = CommDirectory(comm_cache)    # kept communicators of multi-rank tasks
        self.sent: dict[int, Task] | None = {} if keep_sent else None  # in the order sent
        self.retired = False  # starts nothing more (see retire)
        #: multi-rank tasks that lost a rank to its death -> that rank's WorkerLost outcome
        self.orphaned: dict[int, Outcome] = {}
        #: ends a rank's process (True if it could): rank 0's way to free the peers of a dead
        #: rank that stay blocked in its task past the grace period (set by the owner)
        self.end_rank: Callable[[int], bool] | None = None
        self.completed: list[Result] = []
        #: 1-rank tasks that returned a value without buffers, in two columns (their ids,
        #: their pickled values): a flood's results, kept without a Result and an Outcome each
        self.value_ids: list[int] = []
        self.value_datas: list[Buffer] = []
        self.stopped = False
        self.slow_after = slow_after
        self.bell = bell
        self.near = frozenset(near) if bell is not None else frozenset()
        self.since: dict[int, float] = {}  # rank -> when it was last known between tasks
        self.ringing: set[int] = set()  # ranks whose last report said they ring each report
        self.started: dict[int, float] = {}  # running task -> when it started, until taken
        self._next_slow_check = 0.0
        self._shapes: dict[Spec, Shape] = {}

    # -- the owner's interface ---------------------------------------------------------------
    @property
    def outstanding(self) -> int:
        return len(self.tasks) + len(self.running) + len(self.single)

    def rung_when_done(self) -> bool:
        """Whether every rank with work out rings rank 0's bell when it reports it done: all
        worker ranks are near, each holds one task or said it rings with each report (a worker
        rings when it reports with nothing left to run, and with every report once a task of
        it ran long, until it runs dry; see :mod:`.worker`), and no send of rank 0's is in
        flight (a large one moves only while both sides poll)."""
        if len(self.near) != self.widest or self.outbox.pending:
            return False
        single, ringing = self.single, self.ringing
        if not single:
            return True
        if len(single) > _FEW:
            return len(ringing) == self.widest
        seen: set[int] = set()
        for rank in single.values():
            if rank in seen and rank not in ringing:
                return False
            seen.add(rank)
        return True

    def submit_many(self, tasks: Sequence[Task]) -> None:
        """Queue tasks, in order: each run of them that shares one Spec (a batch's tasks do)
        is checked and queued at once."""
        start, n = 0, len(tasks)
        while start < n:
            spec = tasks[start].spec
            end = start + 1
            while end < n and tasks[end].spec is spec:
                end += 1
            self._queue_run(tasks[start:end] if start or end < n else tasks, spec)
            start = end

    def _queue_run(self, run: Sequence[Task], spec: Spec) -> None:
        shape = self._shapes.get(spec)
        if shape is None:
            shape = Shape(spec.num_ranks, spec.ranks_per_node, spec.num_nodes, spec.exclusive,
                          spec.gpus_per_rank)
            if len(self._shapes) < 1024:
                self._shapes[spec] = shape
        if (shape.width > 1 or shape.gpus) and not self.scheduler.fits_ever(shape):
            for task in run:
                self._fail(task.task_id, self.scheduler.never_fits(task.task_id, shape))
            return
        ids = [task.task_id for task in run]
        self.scheduler.submit_many(ids, shape, spec.priority)
        self.tasks.update(zip(ids, run))

    def cancel(self, task_id: int) -> bool:
        """Drop a task that has not reached any rank yet."""
        if task_id in self.tasks and self.scheduler.cancel(task_id):
            del self.tasks[task_id]
            return True
        return False

    def manager_cancel(self, task_ids: Sequence[int]) -> None:
        """Drop these tasks if they have not started, and answer for each: one queued here is
        dropped at once; a 1-rank task a rank holds gets a ``CANCEL`` to that rank, which drops
        it unless it started (and announces it then: see :mod:`.worker`); one known to have
        started (announced, or a multi-rank task, started once dispatched) is reported in
        ``started`` again. A dropped task ends with a :class:`~rankpool.errors.TaskCancelled`
        result; an unknown one has ended (its result went first)."""
        per_rank: dict[int, list[int]] = {}
        now = time.monotonic()
        for task_id in task_ids:
            if self.cancel(task_id):
                self._dropped(task_id)
                continue
            rank = self.single.get(task_id)
            if rank is not None and task_id not in self.started:
                per_rank.setdefault(rank, []).append(task_id)
            elif rank is None and task_id in self.running and task_id not in self.started:
                self.started[task_id] = now  # its ranks are committed to it: it started
        for rank, ids in per_rank.items():
            self.outbox.send(ids, rank, Tag.CANCEL)
            if rank in self.near:
                # a rank is near only when rank 0 has a bell
                self.bell.ring(rank)  # type: ignore[union-attr]

    def take_started(self, delay: float) -> list[int]:
        """Tasks that started at least ``delay`` seconds ago and are still running, each once."""
        started = self.started
        if not started:
            return []
        limit = time.monotonic() - delay
        taken = []
        for task_id, when in started.items():  # in the order they started
            if when > limit:
                break
            taken.append(task_id)
        for task_id in taken:
            del started[task_id]
        return taken

    def progress(self) -> bool:
        """One round of non-blocking steps; True if anything happened."""
        active = self.manager_receive()
        active = self.check_deadlines() or active
        self.check_slow()
        self.check_depth()
        active = self.manager_dispatch() or active
        self.outbox.poll()
        return active

    def status(self) -> dict[str, int]:
        s = self.scheduler
        return {"ranks": self.widest, "usable": s.usable_ranks, "busy": s.busy_ranks,
                "stuck": len(self.stuck), "lost": len(self.lost), "queued": s.pending,
                "running": len(self.running) + len(self.single)}

    def usable_node_ranks(self) -> list[int]:
        """Worker ranks of each node that are neither stuck nor dead."""
        stuck, lost = self.stuck, self.lost
        return [sum(1 for r in node if r not in stuck and r not in lost)
                for node in self.topology.nodes]

    def manager_stop(self, timeout: float = 10.0, finish: bool = True) -> None:
        """Tell every worker to stop: after what it holds (``finish``), or after its current
        task, dropping queued 1-rank tasks (multi-rank ones still run, so that no peer is
        left waiting for a rank that dropped it)."""
        if self.stopped:
            return
        self.stopped = True
        for rank in self.worker_ranks:
            if rank in self.lost:
                continue
            self.outbox.send(finish, rank, Tag.STOP)
            if rank in self.near:
                # a rank is near only when rank 0 has a bell
                self.bell.ring(rank)  # type: ignore[union-attr]
        if not self.outbox.flush(timeout):
            log.warning("stop did not reach every worker rank within %.1f s", timeout)

    def abandon(self) -> dict[int, int]:
        """The owner stops waiting for the tasks on ranks: every rank still in one is marked
        stuck (rank -> task), and the tasks are forgotten (their owner fails their futures)."""
        for task_id, rank in self.single.items():
            self.stuck[rank] = task_id
        for run in self.running.values():
            for rank in run.remaining:
                self.stuck[rank] = run.task.task_id
        self.single.clear()
        self.running.clear()
        return self.stuck

    # -- steps --------------------------------------------------------------------------------
    def manager_dispatch(self) -> bool:
        if self.retired:
            return False
        assignments, impossible = self.scheduler.assign()
        for key in impossible:
            # the scheduler's keys are the task ids it was given (it types them Hashable)
            task = self.tasks.pop(key)  # type: ignore[call-overload]
            self._fail(task.task_id, InsufficientRanks(task.task_id, task.spec.num_ranks,
                                                       self.scheduler.usable_ranks))
        if not assignments:
            return bool(impossible)
        out = WorkMessages()
        now = time.monotonic()
        sent, comms = self.sent, self.comms
        tasks, single, running, started = self.tasks, self.single, self.running, self.started
        fields = TaskFields()
        # the scheduler hands a rank its shared tasks together: consecutive assignments with
        # equal ranks
        for ranks, group in groupby(assignments, _ranks_of):
            keys: list[Any] = list(map(_key_of, group))
            # the scheduler's keys are the task ids it was given (it types them Hashable)
            run: list[Task] = list(map(tasks.pop, keys))
            if sent is not None:
                sent.update(zip(keys, run))
            if len(ranks) == 1 and plain_run(run):
                # the common case, a flood's: shared 1-rank tasks of one function and spec,
                # without buffers, sent as one run (the rank names each task itself)
                rank = ranks[0]
                fields.look(run[0])
                out.add_run(rank, keys, run, fields, comms.releases(rank))
                single.update(dict.fromkeys(keys, rank))
                continue
            for task in run:
                task_id = task.task_id
                fields.look(task)
                fn, walltime = fields.fn, fields.walltime
                data, buffers = task.data, task.buffers
                # a WorkItem as a plain tuple (see comms): far cheaper to pickle
                item = (task_id, ranks, fields.results_all, walltime, task.fn_digest, fn,
                        data if type(data) is bytes else bytes(data), len(buffers),
                        fields.setting, comms.id_for(ranks) if len(ranks) > 1 else 0, ())
                size = len(item[6]) + len(fn) + ITEM_BYTES
                for r in ranks:
                    release = comms.releases(r)
                    out.add(r, item[:-1] + (release,) if release else item, buffers, size)
                if fields.shared:
                    # nothing of the task is kept: no deadline, no peers (and far fewer live
                    # objects for the garbage collector to walk in a flood of small tasks)
                    single[task_id] = ranks[0]
                else:
                    running[task_id] = Running(task, ranks, now, ranks)
                    started[task_id] = now  # its ranks are committed to it
                    if walltime is not None:
                        heapq.heappush(self.deadlines, (now + walltime + self.grace, task_id))
        holding, since, near = self.scheduler.holding, self.since, self.near
        for rank, messages in out:
            for items, bufs, _ in messages:
                self.outbox.send(items, rank, Tag.WORK, bufs)
            held = holding(rank)  # 1-rank shared tasks, these included; an exclusive task: 0
            if held == out.count[rank]:  # it held nothing: its first task starts now
                since[rank] = now
            if rank in near:  # it sleeps on its bell whenever it holds nothing (and it may
                # have ended what it held since its last report came): ring every time
                # a rank is near only when rank 0 has a bell
                self.bell.ring(rank)  # type: ignore[union-attr]
        return True

    def manager_receive(self) -> bool:
        try:
            return self._receive()
        except MPI.Exception as exc:
            if not acknowledge_failures(self.comm, exc):
                raise
            return True

    def _receive(self) -> bool:
        comm = self.comm
        status = MPI.Status()
        for count in range(RECEIVE_BURST):
            # a second probe after a miss: MPICH's first one may only pull the message in
            if not comm.Iprobe(source=MPI.ANY_SOURCE, tag=Tag.DONE, status=status) and (
                    count or not comm.Iprobe(source=MPI.ANY_SOURCE, tag=Tag.DONE, status=status)):
                return count > 0
            self._take_report(status.Get_source(), receive_report(comm, status.Get_source()))
        return True

    def check_slow(self) -> None:
        """Hold back the ranks that have been inside one task for ``slow_after`` seconds."""
        now = time.monotonic()
        if now < self._next_slow_check:
            return
        self._next_slow_check = now + _SLOW_CHECK
        limit = now - self.slow_after
        s = self.scheduler
        for rank, since in self.since.items():
            if since < limit and s.holding(rank) and not s.held_back(rank):
                s.hold_back(rank)
                log.debug("rank %d has been in one task for %.1f s: no more tasks are queued "
                          "behind it until it reports", rank, now - since)

    def check_depth(self) -> None:
        """Queue as many 1-rank tasks per rank as the recent run times call for (see
        :mod:`.prefetch`)."""
        depth = self.prefetch.update(time.monotonic())
        if depth is not None:
            self.scheduler.set_depth(depth)
            log.debug("1-rank tasks queued per rank: at most %d", depth)

    def retire(self) -> None:
        """Start nothing more: the tasks queued here are forgotten (they end with the pool,
        whose owner leaves once the rest ended), 1-rank tasks queued on ranks are dropped there
        unless started; what started runs on."""
        self.retired = True
        for task_id in self.tasks:
            self.scheduler.cancel(task_id)
        self.tasks.clear()
        self.manager_cancel(list(self.single))


_key_of, _ranks_of = itemgetter(0), itemgetter(1)  # of an Assignment
