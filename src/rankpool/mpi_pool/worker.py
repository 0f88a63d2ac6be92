"""A worker rank: receive tasks from rank 0, run them, report outcomes.

The loop is a short list of non-blocking steps: ``worker_receive`` (``Iprobe`` for work, cancel
or stop), run one queued task, ``worker_report`` (results go back in batches: when the queue
empties, or before a task starts ``flush_interval`` or more after the last report, or before
the last queued task starts, or when a cancel is to be answered; the report also announces that
1-rank task's start: rank 0 thus learns of most tasks that run long without a message per
task), and wait when idle: on the rank's doorbell when it shares rank 0's node (rank 0 rings it
with every message, see :mod:`.doorbell`), else polling with a back-off. With an ``arena`` (the
front-end shares this host's ``/dev/shm``) large result buffers go into its segments and only
their descriptors travel (see :mod:`rankpool.shm.arena`). User code runs inside ``try/except
BaseException``; its outcome, value or error, always becomes a report, so a raising rank never
leaves rank 0 waiting without word. A ``CANCEL`` drops the queued tasks it names and the next
report answers for all of them: dropped, or (found started or done) announced as started; only
the rank knows which (see :mod:`rankpool.frontends.cancelling`). An interrupt (SIGINT) fails
the task running, drops the 1-rank tasks about to start (reported as dropped, as a cancel does)
and fails multi-rank ones as they start, and the rank serves on until rank 0 stops it (see
:mod:`.interrupts`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from itertools import repeat
from typing import Any, NamedTuple

from mpi4py import MPI

from ..protocol.wire import Buffer
from ..shm.arena import Arena
from ..task.injection import comm_position, inject
from ..task.serialize import NONE, FunctionLoader, dumps_data, loads_data
from .applications import Applications, is_application, marked_application
from .backoff import Backoff, BackoffConfig, tighten_timer_slack
from .comm_cache import CommCache
from .doorbell import RING_GRACE, Doorbell
from .interrupts import Interrupts
from .keeper import Link
from .plain_runs import RING_AFTER, run_plain
from .subcomms import MESSAGE_BYTES, Outbox, Tag, WorkItem, acknowledge, has_ulfm, receive
from .task_setting import applied
from .user_code import failure, leave_if_forked, raise_alarm

log = logging.getLogger(__name__)

#: seconds a leaving rank waits for the front-end to copy out results still in its segments
RESULT_LINGER = 2.0
#: seconds an idle rank with a doorbell sleeps on it at a time, with nothing in flight: rank 0
#: rings it with every message it sends it, so it need not poll MPI; a longer sleep would only
#: spare the node's cores (an application's processes among them) its wake-ups
BELL_IDLE = 0.1


class _Callee(NamedTuple):
    """A task function as a worker loaded it, with what running it needs to know of it."""

    fn: Callable[..., Any]
    position: int | None  # where ``comm`` goes (see :mod:`rankpool.task.injection`)
    marked: bool          # always an application task (:func:`.applications.marked_application`)


def _callee(fn: Callable[..., Any]) -> _Callee:
    return _Callee(fn, comm_position(fn), marked_application(fn))


class Worker:
    """Serves rank 0 of ``comm`` until told to stop."""

    def __init__(self, comm: MPI.Intracomm, backoff: BackoffConfig | None = None,
                 flush_interval: float = 0.002, arena: Arena | None = None,
                 bell: Doorbell | None = None, link: Link | None = None,
                 interrupts: Interrupts | None = None,
                 node_names: Sequence[str] | None = None, belled: Collection[int] = (),
                 pids: Sequence[int] | None = None, traced: bool = False) -> None:
        """``bell``: this rank's doorbell when it shares rank 0's node (see :mod:`.doorbell`):
        it waits on it between polls and rings rank 0's after each report; ``link``: its
        keeper's (see :mod:`.keeper`), told of each task before it starts; ``interrupts``:
        the signals that interrupt the rank's tasks while it serves (see :mod:`.interrupts`);
        ``node_names``: the node of every rank of ``comm``, for application tasks (None: they
        ask their ranks); ``belled``: the worker ranks with a doorbell (rank 0's node);
        ``pids``: every rank's process id, so that the held ranks of an application task see
        its first rank die on their node; ``traced``: rank 0 records where and when each task
        ran, so every task is reported with its start and end (otherwise a 1-rank task's value
        without buffers goes in the report's value columns, timeless)."""
        self.comm = comm
        self.arena = arena
        self.bell = bell
        # how an idle rank sleeps between probes: on its bell when it has one
        self._sleep = time.sleep if bell is None else bell.wait
        self.group = comm.Get_group()
        self.rank = comm.Get_rank()
        self.backoff = Backoff(backoff)
        self.flush_interval = flush_interval
        self.queue: deque[tuple[WorkItem, Sequence[Buffer]]] = deque()
        self.outbox = Outbox(comm)
        self.functions = FunctionLoader(prepare=_callee)
        self.done: list[tuple[Any, ...]] = []  # Done fields, as plain tuples (see comms)
        self.done_buffers: list[Buffer] = []
        self.traced = traced
        #: 1-rank tasks that returned a value without buffers, not reported yet (unless
        #: traced): their ids, and their pickled values in the same order
        self.value_ids: list[int] = []
        self.values: list[bytes] = []
        self.value_seconds = 0.0  # how long they ran, in all
        self.value_bytes = 0  # their pickled values' size, in all
        self.dropped: list[int] = []  # cancelled before they started, not reported yet
        self.kept: list[int] = []     # a cancel came after they started, not reported yet
        self.last_report = time.monotonic()
        self.ringing = False  # rings rank 0 with each report until its queue runs dry
        self.poll_until = 0.0  # a ring that brought nothing yet: poll until then
        self.stopping = False
        self.pid = os.getpid()
        self.use_alarm = threading.current_thread() is threading.main_thread()
        self.interrupts = interrupts
        self.apps: Applications | None = None  # made by the first application task
        self.node_names = node_names
        self.belled = frozenset(belled)
        self.pids = pids
        self.link = link
        self.lost_peers: set[int] = set()  # pool ranks that died (rank 0 said so)
        #: multi-rank tasks received after a death, under ULFM: their communicators are made
        #: from their groups (every member received the LOST before the task: same choice)
        self.regroup: set[int] = set()
        self.ulfm = has_ulfm()
        self.comms = CommCache()  # communicators kept for the next task on the same ranks

    def serve(self) -> None:
        tighten_timer_slack()
        if self.interrupts is None:
            self._serve()
        else:
            with self.interrupts:
                self._serve()

    def _serve(self) -> None:
        try:
            fresh = False  # work was received just now
            interrupts = self.interrupts
            while not (self.stopping and not self.queue):
                if self.queue:
                    if interrupts is not None and interrupts.count and interrupts.recent():
                        self.worker_interrupted()
                    # probe for more work only between batches: each Iprobe costs a turn of
                    # MPI's progress engine
                    # report first when due, or before the last queued task if others ended
                    # (it may run long: their results must not wait for it), or when a cancel
                    # waits for its answer
                    if time.monotonic() - self.last_report > self.flush_interval or (
                            (self.done or self.value_ids) and len(self.queue) == 1) \
                            or self.value_bytes > MESSAGE_BYTES or self.kept or self.dropped:
                        if not fresh:
                            self.worker_receive(again=True)  # a cancel may drop the head
                        if self.queue:
                            head = self.queue[0][0]
                            # a multi-rank task started when rank 0 sent it: no announcement
                            self.worker_report(
                                starting=head.task_id if len(head.ranks) == 1 else None)
                    fresh = False
                    if self.queue and not run_plain(self):
                        self.run_next()
                    if not self.queue:
                        self.worker_report()
                        self.worker_receive(again=True)
                elif self.worker_receive(again=True):
                    fresh = True
                    self.poll_until = 0.0
                    self.backoff.reset()
                else:
                    if self.dropped or self.kept:
                        self.worker_report()
                    self.outbox.poll()
                    if self.bell is not None and not self.outbox.pending \
                            and time.monotonic() >= self.poll_until:
                        # idle, nothing in flight: every message rank 0 sends rings
                        if self.bell.wait(BELL_IDLE):
                            self.poll_until = time.monotonic() + RING_GRACE
                            self.backoff.reset()
                    else:  # far from rank 0, a report still moving, or just rung: poll
                        self._sleep(self.backoff.next_delay())
            self.worker_report()
            self.outbox.flush(timeout=10.0)
        finally:
            self.group.Free()
            if self.arena is not None:
                self.arena.close(linger=RESULT_LINGER)

    # -- steps -----------------------------------------------------------------------------
    def worker_receive(self, again: bool = False) -> bool:
        """Take every message rank 0 has sent; True if there was any.

        MPICH's ``Iprobe`` answers from what its progress engine had already pulled in: a
        message that waited while this rank ran a long task is seen only by a second probe,
        so between tasks (``again``) a miss is probed once more.
        """
        got = False
        comm = self.comm
        while True:
            status = MPI.Status()
            if not comm.Iprobe(source=0, tag=MPI.ANY_TAG, status=status) and not (
                    again and not got and comm.Iprobe(source=0, tag=MPI.ANY_TAG, status=status)):
                return got
            got = True
            tag = status.Get_tag()
            if tag == Tag.STOP:
                finish = comm.recv(source=0, tag=Tag.STOP)
                self.stopping = True
                if not finish:
                    dropped = len(self.queue)
                    self.queue = deque(e for e in self.queue if len(e[0].ranks) > 1)
                    if dropped != len(self.queue):
                        log.info("rank %d: stop drops %d queued tasks", self.rank,
                                 dropped - len(self.queue))
                return True
            if tag == Tag.CANCEL:
                self.worker_cancel(comm.recv(source=0, tag=Tag.CANCEL))
                continue
            if tag == Tag.LOST:
                ranks, task_ids = comm.recv(source=0, tag=Tag.LOST)
                self.lost_peers.update(ranks)
                acknowledge(comm)  # ULFM: communicators of survivors can be made again
                self.worker_cancel(task_ids, wide=True)
                continue
            if tag != Tag.WORK:  # a stray DATA message: never expected before its WORK
                log.error("rank %d: unexpected tag %d from rank 0", self.rank, tag)
                comm.recv(source=0, tag=tag)
                continue
            items, buffers = receive(comm, 0, Tag.WORK)
            pos = 0
            if self.lost_peers and self.ulfm:
                self.regroup.update(i.task_id for i in items if len(i.ranks) > 1)
            if not buffers:
                self.queue.extend(zip(items, repeat(())))
                continue
            for item in items:
                self.queue.append((item, buffers[pos:pos + item.nbuf]))
                pos += item.nbuf

    def worker_interrupted(self) -> None:
        """Just interrupted: drop the queued 1-rank tasks before any is announced or started
        (reported as dropped, as a cancel drops them); multi-rank ones stay, to fail as they
        start (their peers build the task's communicator with this rank)."""
        self.worker_cancel([entry[0].task_id for entry in self.queue], answer=False)

    def worker_cancel(self, task_ids: list[int], wide: bool = False,
                      answer: bool = True) -> None:
        """Drop the queued 1-rank tasks among ``task_ids`` (and multi-rank ones if ``wide``: a
        rank of theirs died): they never run (reported as dropped). With ``answer`` (a
        ``CANCEL``), a task found started or done already is announced as started, so that its
        future's ``cancel()`` fails (see :mod:`rankpool.frontends.cancelling`)."""
        wanted = set(task_ids)
        keep: deque[tuple[WorkItem, Sequence[Buffer]]] = deque()
        for entry in self.queue:
            item = entry[0]
            if item.task_id in wanted and (wide or len(item.ranks) == 1):
                self.dropped.append(item.task_id)
                wanted.discard(item.task_id)
            else:
                keep.append(entry)
        self.queue = keep
        if answer and not wide:
            self.kept.extend(wanted)

    def run_next(self) -> None:
        item, buffers = self.queue.popleft()
        if item.release:
            self.comms.release(item.release)
        interrupts = self.interrupts
        if interrupts is not None and interrupts.count and len(item.ranks) == 1 \
                and interrupts.recent():
            self.dropped.append(item.task_id)  # interrupted before it started: never runs
            return
        start = time.time()
        size = len(item.ranks)
        sub_rank = item.ranks.index(self.rank) if size > 1 else 0
        if self.link is not None:
            self.link.task(item.task_id)
        bufs: Sequence[Buffer] = ()
        try:
            if size == 1:
                value = self._call(item, buffers, MPI.COMM_SELF)
            else:
                regroup = item.task_id in self.regroup
                if regroup:
                    self.regroup.discard(item.task_id)
                with self.comms.communicator(self.comm, self.group, item.ranks, item.task_id,
                                             item.comm_id, regroup) as sub:
                    value = self._call(item, buffers, sub)
            if value is None:
                data = NONE
            elif sub_rank == 0 or item.results_all:
                data, bufs = dumps_data(value, "the task's result")
                if bufs:
                    bufs = self.published(bufs)
            else:
                data = b""
            ok = True
        except BaseException as exc:  # the outcome of user code, whatever it is, is a value
            data = failure(exc, self.pid, item.task_id, item.walltime, sub_rank, size)
            bufs, ok = (), False
        end = time.time()
        if self.link is not None:
            self.link.idle()
        if end - start >= RING_AFTER and self.bell is not None:
            self.ringing = True
        if ok and size == 1 and not bufs and not self.traced:
            self.value_ids.append(item.task_id)  # the common case: a value, in the columns
            self.values.append(data)
            self.value_seconds += end - start
            self.value_bytes += len(data)
            return
        self.record(item.task_id, sub_rank, ok, data, bufs, start, end)

    def published(self, bufs: Sequence[Buffer]) -> Sequence[Buffer]:
        """A result's out-of-band buffers as they travel: placed in the arena's segments when
        there is one (only their descriptors go to rank 0)."""
        return bufs if self.arena is None else self.arena.publish(bufs, reader_frees=True)[0]

    def record(self, task_id: int, sub_rank: int, ok: bool, data: bytes,
               bufs: Sequence[Buffer], start: float, end: float) -> None:
        """Keep a task's outcome for the next report, with the times it ran between."""
        self.done.append((task_id, sub_rank, ok, data, len(bufs), start, end))
        if bufs:
            self.done_buffers.extend(bufs)

    def _call(self, item: WorkItem, buffers: Sequence[Buffer], sub: MPI.Intracomm) -> Any:
        callee: _Callee = self.functions.loads(item.fn_digest, item.fn)
        fn, position = callee.fn, callee.position
        # a 1-rank task is its arguments' only reader: it borrows them in place
        args, kwargs = loads_data(item.data, buffers, sub is MPI.COMM_SELF)
        if item.setting is None and sub is MPI.COMM_SELF and not callee.marked:
            # a plain 1-rank task, the common case: never an application task
            args, kwargs = inject(position, args, kwargs, sub)
            return self._timed(item, fn, args, kwargs)
        if is_application(callee.marked, position, args, len(item.ranks), item.setting):
            if self.apps is None:
                self.apps = Applications(self.node_names, self.bell, self.belled, self.pids)
            run = self.apps.run

            def call() -> Any:
                return run(sub, item.setting, lambda: self._timed(item, fn, args, kwargs),
                           item.ranks, item.task_id)
        else:
            args, kwargs = inject(position, args, kwargs, sub)

            def call() -> Any:
                return self._timed(item, fn, args, kwargs)
        if item.setting is None:
            return call()
        agree = None if sub == MPI.COMM_SELF else lambda ok: bool(sub.allreduce(ok, op=MPI.LAND))
        with applied(item.setting, agree):
            return call()

    def _timed(self, item: WorkItem, fn: Any, args: Any, kwargs: Any) -> Any:
        """Run the function under the task's walltime alarm."""
        interrupts = self.interrupts
        if interrupts is not None and interrupts.count and interrupts.recent():
            raise KeyboardInterrupt(f"the task was interrupted ({interrupts.name}) before it "
                                    f"started")
        walltime = item.walltime if self.use_alarm else None
        if walltime is not None:
            previous = signal.signal(signal.SIGALRM, raise_alarm)
            signal.setitimer(signal.ITIMER_REAL, walltime)
        try:
            if interrupts is not None:
                interrupts.in_task = True
            value = fn(*args, **kwargs)
        finally:
            if interrupts is not None:
                interrupts.in_task = False
            if walltime is not None:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
            leave_if_forked(self.pid)
        return value

    def worker_report(self, starting: int | None = None) -> None:
        """Send what ended (and was dropped) since the last report; ``starting``: the task
        about to start, announced with it (and with the started ones a cancel asked for)."""
        if self.done or self.value_ids or self.dropped or self.kept or starting is not None:
            announced = tuple(self.kept) if starting is None else (*self.kept, starting)
            if not self.queue:  # about to wait for work: this report rings, the next may not
                self.ringing = False
            self.outbox.send((self.done, announced, tuple(self.dropped), self.ringing,
                              (self.value_ids, self.values, self.value_seconds)), 0, Tag.DONE,
                             self.done_buffers)
            if self.bell is not None and (self.ringing or not self.queue):
                self.bell.ring(0)
            self.done = []
            self.done_buffers = []
            self.value_ids = []
            self.values = []
            self.value_seconds = 0.0
            self.value_bytes = 0
            self.dropped = []
            self.kept = []
            if self.arena is not None:  # segments the front-end freed since: keep a few
                self.arena.trim()
        self.last_report = time.monotonic()
