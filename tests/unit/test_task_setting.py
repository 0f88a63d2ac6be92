"""Per-task env, cwd and thread variables: applied during the task, restored after."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rankpool.errors import ResourceSpecError, TaskSetupError
from rankpool.mpi_pool.task_setting import THREAD_VARS, applied, setting_of
from rankpool.task.resources import DEFAULT_SPEC, Spec, parse_spec


def test_no_setting_for_plain_specs() -> None:
    assert setting_of(DEFAULT_SPEC) is None
    assert setting_of(parse_spec({"num_ranks": 2, "gpus_per_rank": 1})) is None


def test_env_threads_and_cwd_set_during_and_restored_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RP_KEEP", "before")
    monkeypatch.delenv("RP_NEW", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    start = os.getcwd()
    target = tmp_path / "made" / "here"
    spec = parse_spec({"threads_per_rank": 2, "env": {"RP_KEEP": "during", "RP_NEW": "x",
                                                      "MKL_NUM_THREADS": "5"},
                       "cwd": str(target)})
    with applied(setting_of(spec)):
        assert os.environ["RP_KEEP"] == "during" and os.environ["RP_NEW"] == "x"
        assert os.environ["OMP_NUM_THREADS"] == "2" and os.environ["MKL_NUM_THREADS"] == "5"
        assert all(v in os.environ for v in THREAD_VARS)
        assert os.getcwd() == str(target)
    assert os.environ["RP_KEEP"] == "before" and "RP_NEW" not in os.environ
    assert os.environ["OMP_NUM_THREADS"] == "7" and os.getcwd() == start


def test_restored_when_the_task_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RP_NEW", raising=False)
    start = os.getcwd()
    setting = setting_of(parse_spec({"env": {"RP_NEW": "1"}, "cwd": str(tmp_path)}))
    with pytest.raises(KeyError), applied(setting):
        raise KeyError("task failed")
    assert "RP_NEW" not in os.environ and os.getcwd() == start


def test_a_cwd_that_cannot_be_made_fails_naming_the_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RP_A", raising=False)
    (tmp_path / "file").write_text("not a directory")
    start = os.getcwd()
    setting = setting_of(parse_spec({"cwd": str(tmp_path / "file" / "sub"), "env": {"RP_A": "1"}}))
    with pytest.raises(TaskSetupError, match="cwd") as info, applied(setting):
        pytest.fail("the task must not run")
    assert info.value.key == "cwd" and isinstance(info.value, ResourceSpecError)
    assert os.getcwd() == start and "RP_A" not in os.environ


def test_every_rank_fails_when_another_rank_could_not_enter(tmp_path: Path) -> None:
    setting = setting_of(parse_spec({"cwd": str(tmp_path)}))
    with pytest.raises(TaskSetupError, match="another rank"), applied(setting, lambda ok: False):
        pytest.fail("the task must not run")
    votes: list[bool] = []
    with applied(setting, lambda ok: votes.append(ok) or ok):
        pass
    assert votes == [True]


@pytest.mark.parametrize("spec, key", [
    ({"gpus_per_rank": -1}, "gpus_per_rank"),
    ({"gpus_per_rank": 1.0}, "gpus_per_rank"),
    ({"gpus_per_rank": True}, "gpus_per_rank"),
    ({"threads_per_rank": 0}, "threads_per_rank"),
    ({"threads_per_rank": "4"}, "threads_per_rank"),
    ({"env": ["A=1"]}, "env"),
    ({"env": {"A": 1}}, "env"),
    ({"env": {"": "1"}}, "env"),
    ({"env": {"A=B": "1"}}, "env"),
    ({"env": {3: "1"}}, "env"),
    ({"env": {"A": "x\0y"}}, "env"),
    ({"cwd": ""}, "cwd"),
    ({"cwd": 5}, "cwd"),
    ({"cwd": "a\0b"}, "cwd"),
])
def test_bad_values_are_refused_naming_the_key(spec: dict, key: str) -> None:
    with pytest.raises(ResourceSpecError) as info:
        parse_spec(spec)
    assert info.value.key == key


def test_wire_form_stays_compact_without_the_new_keys(tmp_path: Path) -> None:
    assert parse_spec({"num_ranks": 2}).to_wire() == [2, None, None, False, 0, None]
    spec = parse_spec({"gpus_per_rank": 1, "threads_per_rank": 4, "env": {"B": "2", "A": "1"},
                       "cwd": tmp_path})
    assert spec.cwd == str(tmp_path) and spec.env == (("A", "1"), ("B", "2"))
    assert spec.exclusive and Spec.from_wire(spec.to_wire()) == spec
    assert len(spec.to_wire()) == 10
    with pytest.raises(ResourceSpecError):
        Spec.from_wire([1, None, None, False, 0, None, 0, None, {"A": 3}, None])
