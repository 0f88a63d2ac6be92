"""ExtremeScaleExecutor's judge of failed block starts, with Parsl's own error handlers.

A fake executor and block control stand in for the interchange and the provider: which blocks
registered a pool, which jobs exist, what cancelling did. The judge must count only the blocks
since the last one that started, mark those whose job ended before a pool registered as
FAILED with their diagnosis, and cancel the live ones once the handler gave up.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from parsl.jobs.error_handlers import simple_error_handler, windowed_error_handler
from parsl.jobs.states import JobState, JobStatus

from rankpool.frontends.parsl.starts import StartJudge
from rankpool.launchers.failed_starts import read_failures


class FakeExecutor:
    label = "xs"

    def __init__(self, log_dir: Path, handler: Any, init_blocks: int = 1) -> None:
        self.log_dir = str(log_dir)
        self.block_error_handler = handler
        self.provider = type("P", (), {"init_blocks": init_blocks})()
        self.blocks_to_job_id: dict[str, str] = {}
        self.status_facade: dict[str, JobStatus] = {}
        self.bad: Exception | None = None

    @property
    def bad_state_is_set(self) -> bool:
        return self.bad is not None

    def set_bad_state_and_fail_all(self, exc: Exception) -> None:
        self.bad = exc


class FakeControl:
    def __init__(self, ex: FakeExecutor) -> None:
        self.ex = ex
        self.started: set[str] = set()
        self.cancelled: list[list[str]] = []

    def started_blocks(self) -> set[str]:
        return set(self.started)

    def cancel(self, block_ids: list[str]) -> list[str]:
        self.cancelled.append(block_ids)
        return block_ids


def setup(tmp_path: Path, handler: Any = simple_error_handler,
          **kw: Any) -> tuple[FakeExecutor, FakeControl, StartJudge]:
    ex = FakeExecutor(tmp_path, handler, **kw)
    control = FakeControl(ex)
    return ex, control, StartJudge(control)  # type: ignore[arg-type]


def ended(tmp_path: Path, block: str, text: str) -> JobStatus:
    err = tmp_path / f"{block}.err"
    err.write_text(text + "\n")
    return JobStatus(JobState.COMPLETED, stderr_path=str(err), stdout_path=None)


def test_a_job_that_ended_before_its_pool_registered_breaks_the_executor(tmp_path: Path) -> None:
    ex, control, judge = setup(tmp_path)
    ex.blocks_to_job_id = {"0": "7", "1": "8"}
    ex.status_facade = {"0": ended(tmp_path, "0", "srun: error: More processors requested "
                                                  "than permitted"),
                        "1": JobStatus(JobState.PENDING)}
    judge.judge({"0": ex.status_facade["0"]})  # Parsl's handler saw only block 0 so far
    assert ex.bad is not None and "More processors requested than permitted" in str(ex.bad)
    assert "block 0 (job 7): the block's job ended before its pool registered" in str(ex.bad)
    assert control.cancelled == [["1"]]  # nothing left queued
    [failure] = read_failures(str(tmp_path))
    assert failure.block_id == "0" and failure.job_id == "7"


def test_blocks_that_started_or_were_cancelled_are_not_failed_starts(tmp_path: Path) -> None:
    ex, control, judge = setup(tmp_path)
    ex.blocks_to_job_id = {"0": "7", "1": "8", "2": "9"}
    control.started = {"0"}
    judge.cancelled.add("1")
    status = {"0": JobStatus(JobState.COMPLETED), "1": JobStatus(JobState.CANCELLED),
              "2": JobStatus(JobState.RUNNING)}
    judge.judge(status)
    assert ex.bad is None and read_failures(str(tmp_path)) == []


def test_only_failed_starts_since_the_last_started_block_count(tmp_path: Path) -> None:
    handler = functools.partial(windowed_error_handler, threshold=2)
    ex, control, judge = setup(tmp_path, handler)
    ex.blocks_to_job_id = {str(b): str(10 + b) for b in range(4)}
    # block 0 failed, block 1 started (and ended), block 2 failed: one in a row, not two
    status = {"0": ended(tmp_path, "0", "boom 0"), "1": JobStatus(JobState.COMPLETED),
              "2": ended(tmp_path, "2", "boom 2")}
    control.started = {"1"}
    judge.judge(status)
    assert ex.bad is None
    judge.judge({**status, "3": ended(tmp_path, "3", "boom 3")})  # two in a row since block 1
    assert ex.bad is not None and "boom 3" in str(ex.bad) and "boom 0" not in str(ex.bad)
    assert [f.block_id for f in read_failures(str(tmp_path))] == ["2", "3"]


def test_each_failed_start_is_diagnosed_once(tmp_path: Path) -> None:
    ex, _control, judge = setup(tmp_path, init_blocks=2)  # simple handler: 2 needed
    ex.blocks_to_job_id = {"0": "7", "1": "8"}
    status = {"0": ended(tmp_path, "0", "x"), "1": JobStatus(JobState.RUNNING)}
    judge.judge(status)
    judge.judge(status)
    assert ex.bad is None and len(read_failures(str(tmp_path))) == 1


def test_a_submit_that_failed_is_a_failed_start(tmp_path: Path) -> None:
    ex, _control, judge = setup(tmp_path)
    judge.judge({"0": JobStatus(JobState.FAILED, "Failed to start block 0: sbatch: error: "
                                                 "invalid partition")})
    assert ex.bad is not None and "invalid partition" in str(ex.bad)
    assert "the provider could not submit the block's job" in str(ex.bad)
