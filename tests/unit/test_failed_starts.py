"""Failed block starts: the typed record, the diagnosis from what a job left, the run's list."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rankpool.launchers.failed_starts import diagnose, read_failures, record, tail
from rankpool.protocol.starts import (
    FAILED_STARTS,
    RANK_DIED_WORDS,
    FailedStart,
    StartCause,
    pool_record_path,
)


def test_record_round_trips_through_json() -> None:
    failure = FailedStart("3", "1234", StartCause.JOB_ENDED, "FAILED", 1, "srun: error: x")
    again = FailedStart.from_json(json.loads(json.dumps(failure.to_json())))
    assert again == failure
    assert failure.summary() == ("block 3 (job 1234): the block's job ended before its pool "
                                 "registered (state FAILED, exit code 1)")
    assert failure.message().endswith(":\nsrun: error: x")


@pytest.mark.parametrize("bad", [[], {"block_id": "1"}, {"block_id": "1", "cause": "NOPE"},
                                 {"block_id": "1", "cause": "JOB_ENDED", "exit_code": "x"}])
def test_malformed_records_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        FailedStart.from_json(bad)


def test_tail_keeps_the_last_lines(tmp_path: Path) -> None:
    path = tmp_path / "job.stderr"
    path.write_text("".join(f"line {i}\n\n" for i in range(100)))
    assert tail(str(path), lines=3) == "line 97\nline 98\nline 99"
    assert tail(str(tmp_path / "missing")) == "" and tail(None) == ""


def test_diagnosis_quotes_stderr_stdout_and_the_pool_log(tmp_path: Path) -> None:
    err = tmp_path / "job.stderr"
    err.write_text("srun: error: Unable to create step for job 7: More processors requested "
                   "than permitted\n")
    out = tmp_path / "job.stdout"
    out.write_text("starting\n")
    (tmp_path / "pool-2.log").write_text("rank 0 rankpool INFO registering\n")
    failure = diagnose("2", "7", run_dir=str(tmp_path), state="COMPLETED",
                       outputs=[("stderr", str(err)), ("stdout", str(out))])
    assert failure.cause is StartCause.JOB_ENDED
    text = failure.message()
    assert "More processors requested than permitted" in text
    assert "stdout:\n  starting" in text and "pool log:\n  rank 0 rankpool INFO" in text


def test_diagnosis_of_a_job_that_left_nothing(tmp_path: Path) -> None:
    failure = diagnose("0", "9", run_dir=str(tmp_path), state="FAILED", exit_code=127,
                       outputs=[("stderr", str(tmp_path / "none"))])
    assert failure.detail == "(the job left no output)"
    assert "exit code 127" in failure.summary()


def test_a_keepers_word_of_a_rank_dead_at_the_start_is_the_cause_and_said_last(
        tmp_path: Path) -> None:
    """Other ranks' and srun's lines follow the keeper's in the job's stderr: the diagnosis
    names the death as the cause and repeats the keeper's line last, where `rankpool status`
    (the last lines) shows it."""
    said = (f"rankpool keeper: pool rank process 4711 on n2 exited with status 3 "
            f"{RANK_DIED_WORDS}: ending job step 7.0")
    err = tmp_path / "job.stderr"
    err.write_text(f"{said}\n" + "srun: error: n1: task 0: Terminated\n" * 8)
    failure = diagnose("3", "7", run_dir=str(tmp_path), state="COMPLETED",
                       outputs=[("stderr", str(err))])
    assert failure.cause is StartCause.RANK_DIED
    assert failure.summary() == ("block 3 (job 7): a rank died before its pool registered "
                                 "(state COMPLETED)")
    assert failure.detail.splitlines()[-2:] == ["why:", f"  {said}"]


def test_the_pools_own_record_gives_the_cause(tmp_path: Path) -> None:
    own = FailedStart("4", "", StartCause.UNREACHABLE, detail="no answer from tcp://h:1 for 2 s")
    Path(pool_record_path(str(tmp_path), "4")).write_text(json.dumps(own.to_json()))
    failure = diagnose("4", "11", run_dir=str(tmp_path), state="COMPLETED")
    assert failure.cause is StartCause.UNREACHABLE and failure.job_id == "11"
    assert "no answer from tcp://h:1 for 2 s" in failure.detail


def test_the_run_keeps_a_private_list_of_failed_starts(tmp_path: Path) -> None:
    assert read_failures(str(tmp_path)) == []
    first = FailedStart("0", "1", StartCause.JOB_ENDED, detail="a")
    second = FailedStart("1", "2", StartCause.SUBMIT_FAILED, detail="b")
    record(str(tmp_path), first)
    record(str(tmp_path), second)
    assert read_failures(str(tmp_path)) == [first, second]
    assert os.stat(tmp_path / FAILED_STARTS).st_mode & 0o077 == 0
    (tmp_path / FAILED_STARTS).write_text("not json")
    assert read_failures(str(tmp_path)) == []
