"""rankpool.Executor's provider blocks: submitted with the launch's tasks per node, watched
until their pool registers, diagnosed when their job ends first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parsl.jobs.states import JobState, JobStatus

from rankpool.launchers import SrunLauncher
from rankpool.launchers.provider_blocks import ProviderBlocks
from rankpool.launchers.shape import block_shape
from rankpool.mpi_pool.config import PoolConfig
from rankpool.protocol.starts import StartCause

BASE = PoolConfig(interchange="tcp://127.0.0.1:1", block_id="0")


class FakeProvider:
    status_polling_interval = 0

    def __init__(self, launcher: Any = None, refuse: bool = False) -> None:
        self.launcher = launcher
        self.refuse = refuse
        self.submitted: list[tuple[str, int, str]] = []
        self.states: dict[str, JobStatus] = {}
        self.cancelled: list[Any] = []

    def submit(self, command: str, tasks_per_node: int, job_name: str) -> str:
        if self.refuse:
            raise RuntimeError("sbatch: error: invalid partition specified: nope")
        self.submitted.append((command, tasks_per_node, job_name))
        job = str(40 + len(self.submitted))
        self.states[job] = JobStatus(JobState.PENDING)
        return job

    def status(self, jobs: list[str]) -> list[JobStatus]:
        return [self.states[j] for j in jobs]

    def cancel(self, jobs: list[str]) -> list[bool]:
        self.cancelled += jobs
        return [True] * len(jobs)


def test_block_is_submitted_with_the_shapes_tasks_per_node() -> None:
    provider = FakeProvider(SrunLauncher(ranks_per_node=4))
    blocks = ProviderBlocks(provider, BASE, block_shape(provider, None).tasks_per_node)
    assert blocks.start() == "0"
    [(command, tasks, name)] = provider.submitted
    assert tasks == 4 and name == "rankpool.0" and "--block-id 0" in command


def test_a_job_that_ends_before_registering_is_diagnosed(tmp_path: Path) -> None:
    provider = FakeProvider(SrunLauncher(ranks_per_node=2))
    blocks = ProviderBlocks(provider, BASE, 2, run_dir=str(tmp_path))
    first, second = blocks.start(), blocks.start()
    blocks.started(second)
    assert blocks.ended() == {}
    err = tmp_path / "job.err"
    err.write_text("srun: error: Unable to create step for job 41\n")
    provider.states["41"] = JobStatus(JobState.COMPLETED, stderr_path=str(err))
    provider.states["42"] = JobStatus(JobState.COMPLETED)  # started, then ended: not ours
    assert blocks.ended() == {first: "COMPLETED"}
    assert blocks.ended() == {}
    failure = blocks.failed_start(first)
    assert failure.cause is StartCause.JOB_ENDED and failure.job_id == "41"
    assert "Unable to create step" in failure.detail
    blocks.stop()
    assert provider.cancelled == ["41", "42"]


def test_a_refused_submit_is_a_failed_start() -> None:
    blocks = ProviderBlocks(FakeProvider(SrunLauncher(ranks_per_node=2), refuse=True), BASE, 2)
    block = blocks.start()
    assert blocks.ended() == {block: "not submitted"}
    failure = blocks.failed_start(block)
    assert failure.cause is StartCause.SUBMIT_FAILED and "invalid partition" in failure.detail
