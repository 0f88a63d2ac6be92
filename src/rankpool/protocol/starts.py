"""Failed block starts: why a block ended before its pool registered, as a typed record.

A block can fail before its pool ever registers: the provider cannot submit its job, the job
ends (a launcher option the scheduler refuses, a ``worker_init`` that fails, a Python that
cannot import rankpool, a rank that dies as MPI starts), or the pool starts but never reaches
the interchange. The front-end
that launched the block diagnoses it (:func:`rankpool.launchers.failed_starts.diagnose`) from
what the provider and the job left; a pool that gave up on the interchange says so itself, in
``<run dir>/start-<block>.json`` (:func:`pool_record_path`). The front-end appends every failed
start to ``<run dir>/failed_starts.json`` for ``rankpool status``.

No I/O here: the records and their JSON form only.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

#: the run-directory file that lists a run's failed block starts (a JSON list of records)
FAILED_STARTS = "failed_starts.json"


class StartCause(Enum):
    """Why a block never got a pool registered."""

    SUBMIT_FAILED = "the provider could not submit the block's job"
    JOB_ENDED = "the block's job ended before its pool registered"
    UNREACHABLE = "the pool could not reach the interchange"
    RANK_DIED = "a rank died before its pool registered"


#: what a pool rank's keeper writes (after how the rank ended) when its rank died by itself
#: before the pool started (:mod:`rankpool.mpi_pool.keeper`): a diagnosis that finds it in
#: the job's output gives :attr:`StartCause.RANK_DIED`
RANK_DIED_WORDS = "before the pool started; the other ranks would wait for it for ever"


@dataclass(frozen=True)
class FailedStart:
    """One block that failed to start: what it was, why, and the words it left.

    ``state`` is the provider's job state (``FAILED``, ``COMPLETED``, ...) or ``""``;
    ``exit_code`` the job's exit code when the provider knows it; ``detail`` the tail of the
    job's stderr and stdout and of the pool's log, or the pool's own message.
    """

    block_id: str
    job_id: str
    cause: StartCause
    state: str = ""
    exit_code: int | None = None
    detail: str = ""
    when: float = field(default_factory=time.time)

    def summary(self) -> str:
        """One line: block, job, cause, state and exit code."""
        job = f" (job {self.job_id})" if self.job_id else ""
        how = ", ".join(x for x in (self.state and f"state {self.state}",
                                    self.exit_code is not None and f"exit code {self.exit_code}"
                                    or "") if x)
        return f"block {self.block_id}{job}: {self.cause.value}" + (f" ({how})" if how else "")

    def message(self) -> str:
        """The summary and the words the block left, for logs and errors."""
        return self.summary() + (f":\n{self.detail}" if self.detail else "")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "cause": self.cause.name}

    @classmethod
    def from_json(cls, data: Any) -> FailedStart:
        """A record read back; ValueError when it is not one."""
        if not isinstance(data, dict):
            raise ValueError(f"a failed-start record must be an object, got {type(data).__name__}")
        try:
            cause = StartCause[str(data["cause"])]
            code = data.get("exit_code")
            return cls(str(data["block_id"]), str(data.get("job_id", "")), cause,
                       str(data.get("state", "")), None if code is None else int(code),
                       str(data.get("detail", "")), float(data.get("when", 0.0)))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a failed-start record: {exc}") from None


def pool_record_path(run_dir: str, block_id: str) -> str:
    """Where a pool of ``block_id`` that gave up before registering leaves its record."""
    import os
    return os.path.join(run_dir, f"start-{block_id}.json")
