"""Node resources end to end with ``rankpool.Executor``: a local pool whose worker ranks own
fake devices (plain id strings), CPU binding, and the ``gpus_per_rank``, ``threads_per_rank``,
``env`` and ``cwd`` keys, all checked from inside tasks."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import executor, wait_for

from rankpool import Executor, ResourceSpecError, TaskSetupError

pytestmark = pytest.mark.mpi

VAR = "RP_TEST_DEVICE"
CPUS = sorted(os.sched_getaffinity(0))


def whereami(comm: Any = None, hold: float = 0.0) -> dict[str, Any]:
    """What the rank running this sees: pool rank, device, CPUs, variables, directory."""
    from mpi4py import MPI
    start = time.time()
    time.sleep(hold)
    return {"rank": MPI.COMM_WORLD.Get_rank(), "device": os.environ.get(VAR),
            "cpus": sorted(os.sched_getaffinity(0)), "omp": os.environ.get("OMP_NUM_THREADS"),
            "blas": os.environ.get("OPENBLAS_NUM_THREADS"), "color": os.environ.get("RP_COLOR"),
            "cwd": os.getcwd(), "start": start, "end": time.time()}


def fail_inside(path: str, comm: Any = None) -> None:
    assert os.getcwd() == path and os.environ["RP_COLOR"] == "red"
    raise RuntimeError("the task failed on purpose")


def _affinity() -> list[list[int]] | str:
    """One CPU per local worker rank (3 of them), from the CPUs this machine lends."""
    if len(CPUS) < 2:
        return "none"
    return [[CPUS[0]], [CPUS[1]], [CPUS[1]]]


@pytest.fixture(scope="module")
def gpu_ex(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """3 worker ranks; ranks 1 and 2 own devices "a" and "b", rank 3 owns none."""
    with executor(tmp_path_factory.mktemp("gpu"), max_ranks=3, accelerators=["a", "b"],
                  accelerator_env=VAR, cpu_affinity=_affinity()) as ex:
        yield ex


@pytest.mark.timeout(90)
def test_each_rank_sees_exactly_its_device(gpu_ex: Executor) -> None:
    seen = gpu_ex.requirements(num_ranks=2, gpus_per_rank=1, results="all") \
        .submit(whereami).result(timeout=60)
    assert [(s["rank"], s["device"]) for s in seen] == [(1, "a"), (2, "b")]
    wait_for(lambda: gpu_ex.pools(), timeout=30)
    assert gpu_ex.pools()[0]["devices"] == {"1": "a", "2": "b"}


@pytest.mark.timeout(90)
def test_concurrent_gpu_tasks_never_share_a_device(gpu_ex: Executor) -> None:
    gpu = gpu_ex.requirements(gpus_per_rank=1)
    runs = [f.result(timeout=60) for f in [gpu.submit(whereami, hold=0.2) for _ in range(6)]]
    assert {(r["rank"], r["device"]) for r in runs} <= {(1, "a"), (2, "b")}
    for device in ("a", "b"):
        spans = sorted((r["start"], r["end"]) for r in runs if r["device"] == device)
        assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:], strict=False))


@pytest.mark.timeout(90)
def test_cpu_tasks_keep_off_device_ranks(gpu_ex: Executor) -> None:
    for _ in range(3):  # one at a time: the device-less rank is free every time
        seen = gpu_ex.submit(whereami).result(timeout=60)
        assert (seen["rank"], seen["device"]) == (3, None)


@pytest.mark.timeout(90)
@pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs")
def test_affinity_matches_the_option(gpu_ex: Executor) -> None:
    seen = gpu_ex.requirements(num_ranks=3, results="all").submit(whereami).result(timeout=60)
    assert {s["rank"]: s["cpus"] for s in seen} == {1: [CPUS[0]], 2: [CPUS[1]], 3: [CPUS[1]]}


@pytest.mark.timeout(90)
def test_env_threads_and_cwd_during_and_after(gpu_ex: Executor, tmp_path: Path) -> None:
    target = tmp_path / "new" / "dir"
    spec = gpu_ex.requirements(num_ranks=3, results="all", threads_per_rank=2,
                               env={"RP_COLOR": "red"}, cwd=str(target))
    during = spec.submit(whereami).result(timeout=60)
    assert {(s["omp"], s["blas"], s["color"], s["cwd"]) for s in during} == \
        {("2", "2", "red", str(target))}
    failing = gpu_ex.requirements(num_ranks=3, env={"RP_COLOR": "red"}, cwd=str(target))
    with pytest.raises(RuntimeError, match="on purpose"):
        failing.submit(fail_inside, str(target)).result(timeout=60)
    after = gpu_ex.requirements(num_ranks=3, results="all").submit(whereami).result(timeout=60)
    assert all(s["color"] is None and s["omp"] is None and s["cwd"] != str(target)
               for s in after)


@pytest.mark.timeout(90)
def test_a_cwd_that_cannot_be_made_fails_only_that_task(gpu_ex: Executor, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    bad = gpu_ex.requirements(num_ranks=2, cwd=str(blocker / "sub"))
    with pytest.raises(TaskSetupError, match="cwd") as info:
        bad.submit(whereami).result(timeout=60)
    assert info.value.key == "cwd"
    assert gpu_ex.submit(whereami).result(timeout=60)["rank"] >= 1  # the pool carries on


def test_gpu_requests_no_block_can_hold_are_refused_at_submit(gpu_ex: Executor,
                                                              tmp_path: Path) -> None:
    for spec in ({"gpus_per_rank": 1, "num_ranks": 3}, {"gpus_per_rank": 2}):
        with pytest.raises(ResourceSpecError, match="gpus_per_rank"):
            gpu_ex.requirements(**spec).submit(whereami)
    with pytest.raises(ResourceSpecError, match="gpus_per_rank"):
        Executor(max_ranks=2, requirements={"gpus_per_rank": 1}, run_dir=str(tmp_path))
    with pytest.raises(ValueError, match="cpu_affinity"):
        Executor(max_ranks=2, cpu_affinity=[[0]], run_dir=str(tmp_path))
    with pytest.raises(ValueError, match="accelerators"):
        Executor(max_ranks=2, accelerators=["a", "a"], run_dir=str(tmp_path))
