"""What a worker rank that died costs, seen from rank 0 (the :class:`~.manager.Manager` is
built on :class:`RankLosses`).

The rank's reports sent before it died are taken first; of the tasks it was sent, those it had
started fail with :class:`~rankpool.errors.WorkerLost`, its other 1-rank tasks run elsewhere,
and every multi-rank task it belonged to ends (``manager_lost``); the ranks still inside such
a task are ended when the pool leaves (``end_orphans``). :func:`abort_for_stuck` ends an MPI
job whose stuck ranks could never finish it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping, Sequence

from mpi4py import MPI

from ..protocol.batches import Task
from ..protocol.result_batches import Outcome
from ..task.serialize import dumps_error
from ..wording import describe_exit
from .deaths import Death, lost_error
from .mpich_files import abort
from .outcomes import TaskOutcomes
from .subcomms import Tag, acknowledge_failures, receive_report

log = logging.getLogger(__name__)


class RankLosses(TaskOutcomes):
    """The manager's records of tasks on ranks, when a rank dies."""

    def manager_lost(self, death: Death) -> None:
        """A worker rank died. Take the reports it sent before; of the tasks it was sent, those
        it had started fail with :class:`~rankpool.errors.WorkerLost` (the one it ran, and
        any whose result had not left it yet), its other 1-rank tasks run elsewhere, and every
        multi-rank task it belonged to fails; the rank is never used again. The other ranks
        hear of it (``LOST``) and drop those multi-rank tasks unless started; peers that did
        start one come back if the MPI tells them, or are stuck after the grace period."""
        rank = death.rank
        if rank in self.lost or rank not in self.worker_set:
            return
        self._drain_reports(rank)
        self.lost[rank] = death
        self.comms.stop()
        self.outbox.forget(rank)
        self.since.pop(rank, None)
        self.ringing.discard(rank)
        self.stuck.pop(rank, None)
        self.scheduler.mark_stuck([rank])
        order = [t for t in (self.sent or ()) if self.single.get(t) == rank
                 or (t in self.running and rank in self.running[t].remaining)]
        began = order.index(death.task) + 1 if death.task in order else 0
        again: list[Task] = []
        wide: list[int] = []
        for pos, task_id in enumerate(order):
            run = self.running.get(task_id)
            if run is not None:
                wide.append(task_id)
                sub = run.ranks.index(rank)
                what = "while running it" if pos < began else "before it started"
                error = lost_error(task_id, death, what)
                outcome = self.orphaned[task_id] = Outcome(
                    sub, False, dumps_error(error, sub, len(run.ranks)))
                self._settle(run, rank, outcome)
                continue
            del self.single[task_id]
            self.started.pop(task_id, None)
            self.scheduler.finish(task_id)
            # kept (not None) wherever a rank can die and the pool serve on: here
            task = self.sent.pop(task_id)  # type: ignore[union-attr]
            if pos >= began:
                again.append(task)
                continue
            what = "while running it" if pos == began - 1 and death.running \
                else "before sending its result"
            self._fail(task_id, lost_error(task_id, death, what))
        self.submit_many(again)  # never started: run them elsewhere
        log.error("worker rank %d (pid %d on %s) %s; %d of its tasks failed, %d run elsewhere; "
                  "worker ranks lost so far: %s", rank, death.pid, death.host,
                  describe_exit(death.status), len(order) - len(again), len(again),
                  sorted(self.lost))
        for peer in self.worker_ranks:
            if peer not in self.lost:
                self.outbox.send(([rank], wide), peer, Tag.LOST)
                if peer in self.near:
                    # a rank is near only when rank 0 has a bell
                    self.bell.ring(peer)  # type: ignore[union-attr]

    def end_orphans(self) -> None:
        """End the ranks still inside a multi-rank task that lost a rank (the owner leaves:
        they would wait for the dead one for ever, and keep the MPI job from ending)."""
        for task_id in self.orphaned:
            run = self.running.get(task_id)
            if run is not None and self.end_rank is not None:
                for rank in run.remaining:
                    self.end_rank(rank)

    def _drain_reports(self, rank: int) -> None:
        """Take every report ``rank`` sent before it died (one whose buffers never come whole
        within a second is dropped: its tasks count as not reported)."""
        status = MPI.Status()
        try:
            while self.comm.Iprobe(source=rank, tag=Tag.DONE, status=status) or \
                    self.comm.Iprobe(source=rank, tag=Tag.DONE, status=status):
                received = receive_report(self.comm, rank, time.monotonic() + 1.0)
                self._take_report(rank, received)
        except TimeoutError:
            log.warning("a report of rank %d did not arrive whole before it died", rank)
        except MPI.Exception as exc:  # ULFM: nothing more comes from a dead rank
            if not acknowledge_failures(self.comm, exc):
                raise


def abort_for_stuck(comm: MPI.Comm, stuck: Mapping[int, int], code: int,
                    names: Sequence[int] | None = None) -> None:
    """End the MPI job: the ``stuck`` ranks (rank -> the task it never came back from) could
    never reach ``MPI_Finalize``, so the job would never exit. ``names``: how the message
    numbers each rank of ``comm`` (the user's ranks, for a ``CommExecutor``)."""
    by_task: dict[int, list[int]] = {}
    for rank, task_id in sorted(stuck.items()):
        by_task.setdefault(task_id, []).append(names[rank] if names is not None else rank)
    ranks = sorted(r for rs in by_task.values() for r in rs)
    where = ", ".join(f"{'rank' if len(rs) == 1 else 'ranks'} {rs if len(rs) > 1 else rs[0]} "
                      f"in task {task_id}" for task_id, rs in sorted(by_task.items()))
    text = (f"ranks {ranks} are stuck in tasks that never ended; aborting the MPI job, which "
            f"could not finish otherwise ({where})")
    log.critical("%s", text)
    print(f"rankpool: {text}", file=sys.stderr, flush=True)
    abort(comm, code)
