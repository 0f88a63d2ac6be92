"""Blocks of :class:`~rankpool.frontends.parsl.executor.ExtremeScaleExecutor` that fail to start.

Parsl's job status alone cannot tell a block that failed to start from one that served and
ended: a Slurm job whose ``srun`` was refused leaves ``squeue`` and reads ``COMPLETED``, like
a drained one. The interchange can: it lists the blocks that ever had a pool registered
(``registered_blocks``). After each of Parsl's status polls, :meth:`StartJudge.judge`

* diagnoses every block whose job ended before a pool of it registered
  (:func:`rankpool.launchers.failed_starts.diagnose`: the job's state and exit code, the tail
  of its stderr and stdout, the pool's log, the pool's own start record), logs it at ERROR
  once and records it in the run directory for ``rankpool status``;
* hands the executor's ``block_error_handler`` the blocks submitted since the last block that
  started, a failed start marked ``FAILED`` with the diagnosis as its message, so Parsl's
  handlers count consecutive failed starts (the default, like HTEX's, gives up after
  ``max(1, init_blocks)`` of them) and fail the waiting tasks with an error quoting the cause;
* once the executor is in a bad state, cancels the blocks still queued or running, so no job
  is left behind and none is submitted.

Blocks that started and later ended are not judged here: their tasks fail with
``ManagerLost`` and Parsl's retries run them elsewhere.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from parsl.jobs.states import JobState, JobStatus

from ...launchers.failed_starts import diagnose, record
from ...protocol.starts import FailedStart, StartCause

if TYPE_CHECKING:
    from .scaling import BlockControl

log = logging.getLogger(__name__)


class StartJudge:
    """Failed starts of one executor's blocks, judged after each status poll."""

    def __init__(self, control: BlockControl) -> None:
        self.control = control
        self.failed: dict[str, FailedStart] = {}  # block id -> its diagnosis
        self.cancelled: set[str] = set()          # blocks the executor itself ended

    def judge(self, status: dict[str, JobStatus]) -> None:
        """Diagnose new failed starts, apply ``block_error_handler``, clean up if it gave up."""
        ex = self.control.ex
        started = self.control.started_blocks()
        last = max((_number(b) for b in started), default=-1)
        window: dict[str, JobStatus] = {}
        for block_id, job in sorted(status.items(), key=lambda kv: _number(kv[0])):
            if block_id in started or block_id in self.cancelled or _number(block_id) < last:
                continue
            if job.terminal:
                failure = self.failed.get(block_id) or self._diagnose(block_id, job)
                window[block_id] = JobStatus(JobState.FAILED, message=failure.message(),
                                             exit_code=job.exit_code)
            else:
                window[block_id] = job
        ex.block_error_handler(ex, window)
        if ex.bad_state_is_set:
            self.cancel_live()

    def _diagnose(self, block_id: str, job: JobStatus) -> FailedStart:
        ex = self.control.ex
        job_id = ex.blocks_to_job_id.get(block_id)
        if job_id is None:  # provider.submit raised: Parsl's status carries its message
            failure = FailedStart(block_id, "", StartCause.SUBMIT_FAILED, job.state.name,
                                  job.exit_code, job.message or "")
        else:
            failure = diagnose(block_id, str(job_id), run_dir=ex.log_dir, state=job.state.name,
                               exit_code=job.exit_code, message=job.message or "",
                               outputs=[("stderr", job.stderr_path),
                                        ("stdout", job.stdout_path)])
        self.failed[block_id] = failure
        log.error("%s: %s", ex.label, failure.message())
        record(ex.log_dir, failure)
        return failure

    def cancel_live(self) -> None:
        """Cancel every block whose job has not ended (the executor gave up on its blocks)."""
        ex = self.control.ex
        live = [b for b, s in list(ex.status_facade.items())
                if not s.terminal and b in ex.blocks_to_job_id and b not in self.cancelled]
        if not live:
            return
        log.info("%s: cancelling blocks %s: the executor gave up starting blocks", ex.label, live)
        self.cancelled.update(live)
        try:
            self.control.cancel(live)
        except Exception:  # the provider could not cancel: shutdown tries again
            log.warning("%s: could not cancel blocks %s", ex.label, live, exc_info=True)


def _number(block_id: str) -> int:
    """Parsl's block ids count up from 0; others sort first."""
    return int(block_id) if block_id.isdigit() else -1

