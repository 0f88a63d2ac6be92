"""Blocks of ExtremeScaleExecutor under a real DataFlowKernel: scaling, hold and drain, a lost
interchange. (Blocks killed and retried: ``tests/faults/test_parsl_retries.py``.)"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import xs_apps as apps
from parsl.executors.errors import BadStateException
from parsl.jobs.states import JobState
from xs_factory import xs

from rankpool import BrokenPool
from rankpool.launchers.mpiexec import find_mpiexec

pytestmark = pytest.mark.timeout(120)


def test_scale_out_from_zero_counts_ranks(load: Any, tmp_path: Path, wait_for: Any) -> None:
    dfk = load(xs(ranks_per_node=2, init_blocks=0, max_blocks=3))
    ex = dfk.executors["xs"]
    assert ex.blocks_to_job_id == {}
    go = str(tmp_path / "go")
    wide = {"num_ranks": 2}
    futures = [apps.hold_until(str(tmp_path / f"s{i}"), go, parsl_resource_specification=wide)
               for i in range(2)]
    wait_for(lambda: ex.outstanding() == 4, timeout=10)  # 2 tasks, 4 ranks
    # 4 ranks need 2 blocks of 2 ranks (counting tasks would ask for 1)
    wait_for(lambda: len(ex.blocks_to_job_id) == 2, timeout=20)
    wait_for(lambda: len(ex.connected_blocks()) == 2, timeout=30)
    Path(go).touch()
    assert {f.result(timeout=30) for f in futures} <= {"0", "1"}
    assert len(ex.blocks_to_job_id) == 2


def test_status_managers_hold_drain_and_scale_in(load: Any, tmp_path: Path,
                                                  wait_for: Any) -> None:
    dfk = load(xs(ranks_per_node=2))
    ex = dfk.executors["xs"]
    assert apps.double(2).result(timeout=60) == 4
    [pool] = ex.connected_managers()
    assert pool["block_id"] == "0" and pool["ranks"] == 2 and pool["widest"] == 2
    assert pool["tasks"] == 0 and pool["busy_ranks"] == 0 and not pool["held"]
    assert pool["rankpool"] and pool["python"] and pool["hosts"]
    assert ex.connected_workers == 2
    assert ex.status()["0"].state == JobState.RUNNING
    ex.hold_block("0")
    held = apps.double(3)
    wait_for(lambda: ex.connected_managers()[0]["held"], timeout=10)
    assert not held.done()  # queued in the interchange, not sent to the held pool
    ex.release_block("0")
    assert held.result(timeout=30) == 6
    # a busy block is not scaled in unless forced
    go = str(tmp_path / "go")
    busy = apps.hold_until(str(tmp_path / "started"), go)
    wait_for(lambda: os.path.exists(tmp_path / "started"), timeout=30)
    assert ex.scale_in(1) == []
    Path(go).touch()
    assert busy.result(timeout=30) == "0"
    wait_for(lambda: ex.connected_managers()[0]["tasks"] == 0, timeout=10)
    assert ex.scale_in(1) == ["0"]
    wait_for(lambda: ex.connected_blocks() == [], timeout=10)
    wait_for(lambda: ex.status()["0"].terminal, timeout=10)


def test_drain_period_retires_blocks_and_new_ones_take_over(load: Any, wait_for: Any) -> None:
    dfk = load(xs(drain_period=1.0))
    ex = dfk.executors["xs"]
    assert apps.block_id().result(timeout=60) == "0"
    wait_for(lambda: ex.status()["0"].terminal, timeout=15)
    assert ex.status()["0"].state == JobState.COMPLETED  # drained: the pool left by itself
    assert apps.block_id().result(timeout=60) == "1"  # the strategy started a new block


def test_lost_interchange_sets_bad_state(load: Any, tmp_path: Path, wait_for: Any) -> None:
    dfk = load(xs())
    ex = dfk.executors["xs"]
    started = str(tmp_path / "started")
    future = apps.hold_until(started, str(tmp_path / "never"))
    wait_for(lambda: os.path.exists(started), timeout=30)
    ex._client.proc.kill()
    with pytest.raises(BadStateException, match="interchange"):
        future.result(timeout=30)
    assert ex.bad_state_is_set and isinstance(ex.executor_exception, BrokenPool)
    with pytest.raises(BrokenPool):
        ex.submit(apps.double.func, {}, 1)


def test_unmanaged_executor_runs_on_a_pool_started_by_hand(load: Any, tmp_path: Path) -> None:
    dfk = load(xs(managed=False))
    ex = dfk.executors["xs"]
    assert ex.status_polling_interval == 0 and ex.blocks_to_job_id == {}
    command = ex.block_command("manual")
    proc = subprocess.Popen(f"{find_mpiexec()} -n 3 {command}", shell=True,
                            start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        assert apps.block_id().result(timeout=60) == "manual"
        assert ex.connected_blocks() == ["manual"]
    finally:
        dfk.cleanup()
        try:
            proc.wait(timeout=15)  # the interchange stopped the pool
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise


def test_blocks_are_submitted_with_their_launchs_tasks_per_node(load: Any) -> None:
    """Parsl submits blocks with tasks_per_node=1; a rankpool block asks for what its launch
    uses: the local block's 2 workers and its manager, 3 processes on its one node."""
    from parsl.providers import LocalProvider

    from rankpool.launchers.local_launcher import LocalMpiexecLauncher

    seen: list[int] = []

    class Recording(LocalProvider):
        def submit(self, command: str, tasks_per_node: int, job_name: str = "") -> Any:
            seen.append(tasks_per_node)
            return super().submit(command, tasks_per_node, job_name)

    provider = Recording(launcher=LocalMpiexecLauncher(), init_blocks=1, max_blocks=1)
    dfk = load(xs(ranks_per_node=2, provider=provider))
    assert apps.double(4).result(timeout=60) == 8
    assert seen == [3] and dfk.executors["xs"].blocks_to_job_id.keys() == {"0"}


def test_block_that_cannot_start_fails_the_tasks_with_its_cause(load: Any, tmp_path: Path,
                                                                capsys: Any) -> None:
    """A block whose mpiexec exits at once (here a stand-in that says why and exits 7) fails
    the waiting task with its words, and no further block is submitted (HTEX's default
    handler: one failed start of init_blocks=1 is enough)."""
    from rankpool.cli import main as rankpool_main
    from rankpool.launchers.local_launcher import local_provider
    fake = tmp_path / "mpiexec"
    fake.write_text("#!/bin/sh\necho 'mpiexec: hydra_pmi_proxy: not found' >&2\nexit 7\n")
    fake.chmod(0o755)
    provider = local_provider(mpiexec=str(fake), init_blocks=1, max_blocks=2)
    dfk = load(xs(ranks_per_node=2, provider=provider))
    ex = dfk.executors["xs"]
    future = apps.double(1)
    with pytest.raises(BadStateException) as failed:
        future.result(timeout=60)
    text = str(failed.value)
    assert "block 0 (job " in text and "ended before its pool registered" in text, text
    assert "mpiexec: hydra_pmi_proxy: not found" in text and "exit code 7" in text, text
    assert list(ex.blocks_to_job_id) == ["0"]
    assert rankpool_main(["status", "--once", str(Path(ex.run_dir) / ex.label)]) == 0
    out = capsys.readouterr().out
    assert "failed starts  1 block ended before their pool registered" in out, out
    assert "hydra_pmi_proxy: not found" in out, out
