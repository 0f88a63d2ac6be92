"""How each task on the worker ranks ends, seen from rank 0 (the :class:`~.manager.Manager`'s
receiving side; where this sits on the data path: ``docs/internals.md``).

A rank's report (``_take_report``) ends its 1-rank tasks at once and adds to a multi-rank task's
outcomes until every rank of it reported (``_record``, ``_finish``); a task whose grace period
after a failed rank, or whose walltime, has passed is given up and its missing ranks marked
stuck (``check_deadlines``, ``_give_up``). What a worker rank that died costs is
:mod:`.rank_losses`.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat

from mpi4py import MPI

from ..errors import StuckRanksError, TaskCancelled, TaskTimeout
from ..protocol.batches import Task
from ..protocol.result_batches import Outcome, Result, Values
from ..protocol.wire import Buffer
from ..shm.reader import discard
from ..task.serialize import dumps_error, error_summary
from .comm_cache import CommDirectory
from .deaths import Death
from .doorbell import Doorbell
from .placement.scheduler import Scheduler
from .prefetch import Prefetch
from .subcomms import Done, Outbox, Report
from .trace import TraceRecorder

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Running:
    """A task on its ranks: a 1-rank exclusive task, or a multi-rank one."""

    task: Task
    ranks: tuple[int, ...]
    start: float
    remaining: set[int] | tuple[int, ...]   # a set once a multi-rank task starts reporting
    values: list[Outcome] | None = None
    errors: list[Outcome] | None = None
    first_start: float = 0.0
    last_end: float = 0.0


class TaskOutcomes:
    """The manager's records of tasks on ranks, brought to their ends (the state is set up,
    and tasks placed, by :class:`~.manager.Manager`)."""

    comm: MPI.Intracomm
    grace: float
    scheduler: Scheduler
    worker_ranks: list[int]
    worker_set: frozenset[int]
    outbox: Outbox
    running: dict[int, Running]
    single: dict[int, int]
    trace: TraceRecorder | None
    deadlines: list[tuple[float, int]]
    stuck: dict[int, int]
    lost: dict[int, Death]
    comms: CommDirectory
    sent: dict[int, Task] | None
    retired: bool
    orphaned: dict[int, Outcome]
    end_rank: Callable[[int], bool] | None
    completed: list[Result]
    value_ids: list[int]
    value_datas: list[Buffer]
    bell: Doorbell | None
    near: frozenset[int]
    since: dict[int, float]
    ringing: set[int]
    started: dict[int, float]
    prefetch: Prefetch
    #: queue tasks here (again): :meth:`.manager.Manager.submit_many`
    submit_many: Callable[[Sequence[Task]], None]

    def _take_report(self, source: int, received: tuple[Report, list[Buffer]]) -> None:
        report, buffers = received
        now = self.since[source] = time.monotonic()
        if report.rings:
            self.ringing.add(source)
        else:
            self.ringing.discard(source)
        if source in self.scheduler.held_back_ranks:
            self.scheduler.hold_back(source, False)
        pos = 0
        ended: list[int] = []
        single, started = self.single, self.started
        value_ids, value_datas = self.value_ids, self.value_datas
        plain = self.trace is None
        ids, datas, seconds = report.values
        if ids:
            self.prefetch.ran(len(ids), seconds)
            # the common case, a flood's: 1-rank tasks' values, nothing more to keep; each
            # step one pass in C while every id is a shared task of this rank
            owners = list(map(single.pop, ids, repeat(None)))
            if plain and owners.count(source) == len(ids):
                ended += ids
                value_ids += ids
                value_datas += datas
                if started:
                    list(map(started.pop, ids, repeat(None)))
            else:
                for task_id, owner, data in zip(ids, owners, datas):
                    if owner is not None:
                        single[task_id] = owner  # back: _record takes it as any report entry
                    self._record(source, Done(task_id, 0, True, data, 0, 0.0, 0.0), [], ended)
        for done in report.done:
            task_id, _, ok, data, nbuf, _, _ = done
            if ok and not nbuf and plain and single.get(task_id) == source:
                # the common case, a flood's: a 1-rank task's value, nothing more to keep
                del single[task_id]
                if started:
                    started.pop(task_id, None)
                ended.append(task_id)
                value_ids.append(task_id)
                value_datas.append(data)
                continue
            self._record(source, Done._make(done), buffers[pos:pos + nbuf] if nbuf else [],
                         ended)
            pos += nbuf
        for task_id in report.starting:
            if self.single.get(task_id) == source:
                self.started[task_id] = now
        for task_id in report.dropped:
            if self.single.get(task_id) == source:
                del self.single[task_id]
                ended.append(task_id)
                self._dropped(task_id)
            else:
                self._left(task_id, source)
        if ended:
            self.scheduler.finish_many(ended)
            if self.sent:
                for task_id in ended:
                    self.sent.pop(task_id, None)

    def check_deadlines(self) -> bool:
        now = time.monotonic()
        fired = False
        while self.deadlines and self.deadlines[0][0] <= now:
            _, task_id = heapq.heappop(self.deadlines)
            run = self.running.get(task_id)
            if run is None:
                continue
            fired = True
            spec = run.task.spec
            if run.errors:
                cause: Exception = StuckRanksError(task_id, self._sub_ranks(run), self.grace)
            else:
                cause = TaskTimeout(task_id, spec.walltime or 0.0)
            self._give_up(run, cause)
        return fired

    def _left(self, task_id: int, source: int) -> None:
        """``source`` dropped a multi-rank task that lost a rank before it started there."""
        run = self.running.get(task_id)
        if run is not None and source in run.remaining:
            self._settle(run, source, None)

    def _settle(self, run: Running, rank: int, error: Outcome | None) -> None:
        """``rank`` is done with ``run`` (or will never report on it), with ``error`` if it
        failed; the task finishes with its last rank."""
        _tracked(run)
        assert isinstance(run.remaining, set) and run.errors is not None
        run.remaining.discard(rank)
        if error is not None:
            run.errors.append(error)
            if run.remaining and len(run.errors) == 1:
                heapq.heappush(self.deadlines, (time.monotonic() + self.grace, run.task.task_id))
        if not run.remaining:
            self._finish(run, [])

    def _record(self, source: int, done: Done, buffers: list[Buffer], ended: list[int]) -> None:
        """Take one rank's report; a 1-rank task that ended goes on ``ended`` (its ranks are
        freed by the caller, for all of one message's reports at once)."""
        if not done.ok:
            log.warning("task %d raised on rank %d (rank %d of the task): %s", done.task_id,
                        source, done.rank, error_summary(done.data))
        if self.single.get(done.task_id) == source:  # a 1-rank shared task (one that raised,
            # returned buffers or is traced: :meth:`_take_report` takes the others)
            del self.single[done.task_id]
            if self.started:
                self.started.pop(done.task_id, None)
            if self.trace is not None:
                self.trace.add(done.task_id, (source,), done.start, done.end)
            ended.append(done.task_id)
            self._complete(done, buffers)
            return
        run = self.running.get(done.task_id)
        if run is None or source not in run.remaining:
            discard(buffers)  # a late rank's value: nobody reads it
            if self.stuck.get(source) == done.task_id:
                del self.stuck[source]
                self.scheduler.unstick([source])
                log.warning("rank %d came back from task %d after it was given up", source,
                            done.task_id)
            return
        if len(run.ranks) == 1:
            del self.running[done.task_id]
            self.started.pop(done.task_id, None)
            if self.trace is not None:
                self.trace.add(done.task_id, run.ranks, done.start, done.end)
            ended.append(done.task_id)
            self._complete(done, buffers)
            return
        if not run.first_start or done.start < run.first_start:
            run.first_start = done.start
        run.last_end = max(run.last_end, done.end)
        if done.ok and (done.rank == 0 or run.task.spec.results_all):
            _tracked(run).append(Outcome(done.rank, True, done.data, buffers))
        self._settle(run, source, None if done.ok else Outcome(done.rank, False, done.data,
                                                              buffers))

    @property
    def completed_count(self) -> int:
        """Results that :meth:`take_completed` would give."""
        return len(self.completed) + len(self.value_ids)

    def take_completed(self) -> tuple[Values, list[Result]]:
        """What finished since the last call: ``(values, results)``, as
        :func:`~rankpool.protocol.result_batches.encode_results` and ``Engine.resolve`` take
        them."""
        values, results = (self.value_ids, self.value_datas), self.completed
        self.value_ids, self.value_datas, self.completed = [], [], []
        return values, results

    def _complete(self, done: Done, buffers: list[Buffer]) -> None:
        """A 1-rank task's result: its value alone where it has no buffers."""
        if done.ok and not buffers:
            self.value_ids.append(done.task_id)
            self.value_datas.append(done.data)
        else:
            self.completed.append(Result(done.task_id, [Outcome(0, done.ok, done.data, buffers)]))

    def _finish(self, run: Running, extra: list[Outcome]) -> None:
        task_id = run.task.task_id
        del self.running[task_id]
        self.started.pop(task_id, None)
        if self.sent:
            self.sent.pop(task_id, None)
        lost = self.orphaned.pop(task_id, None) if self.orphaned else None
        if self.trace is not None and run.first_start:
            self.trace.add(task_id, run.ranks, run.first_start, run.last_end)
        self.scheduler.finish(task_id)
        if run.errors or extra:
            outcomes = sorted(run.errors or [], key=lambda o: o.rank) + extra
            if lost is not None:  # the death first: the others' errors follow from it
                outcomes.remove(lost)
                outcomes.insert(0, lost)
            for dropped in run.values or ():  # the values of ranks that succeeded go unread
                discard(dropped.buffers)
        else:
            outcomes = sorted(run.values or [], key=lambda o: o.rank)
        self.completed.append(Result(task_id, outcomes))

    def _give_up(self, run: Running, cause: Exception) -> None:
        """Fail a task whose ranks did not all come back; those ranks are stuck (or, when the
        task lost a rank to its death, ended where the owner can: they would wait for it
        forever, and come back as deaths)."""
        missing = sorted(run.remaining)
        if run.task.task_id in self.orphaned and self.end_rank is not None:
            ended = [r for r in missing if self.end_rank(r)]
            if ended:
                log.error("task %d lost a rank; its ranks %s still waited for it after %g s: "
                          "ended", run.task.task_id, ended, self.grace)
                self.scheduler.mark_stuck(ended)  # until their deaths are seen
                run.remaining = set(missing) - set(ended)
                missing = sorted(run.remaining)
                if not missing:
                    self._finish(run, [])
                    return
        log.error("%s; stuck ranks %s", cause, missing)
        sub = [run.ranks.index(r) for r in missing]
        first = sub[0] if sub else 0
        self._finish(run, [Outcome(first, False, dumps_error(cause, first, len(run.ranks)))])
        for rank in missing:
            self.stuck[rank] = run.task.task_id
        self.scheduler.mark_stuck(missing)

    def _sub_ranks(self, run: Running) -> list[int]:
        return [run.ranks.index(r) for r in sorted(run.remaining)]

    def _dropped(self, task_id: int) -> None:
        """A cancelled task that never started ends (its future is already cancelled); one
        dropped by a retiring pool ends with the pool."""
        if self.retired:
            return
        log.debug("task %d cancelled before it started", task_id)
        self.completed.append(Result(task_id, [Outcome(0, False,
                                                       dumps_error(TaskCancelled(task_id)))]))

    def _fail(self, task_id: int, exc: Exception) -> None:
        log.error("task %d failed: %s", task_id, exc)
        self.completed.append(Result(task_id, [Outcome(0, False, dumps_error(exc))]))


def _tracked(run: Running) -> list[Outcome]:
    """``run``'s values, after its ranks' first report made its bookkeeping mutable (a
    multi-rank task is dispatched with a tuple of ranks and no lists)."""
    if isinstance(run.remaining, tuple):
        run.remaining, run.values, run.errors = set(run.remaining), [], []
    assert run.values is not None
    return run.values
