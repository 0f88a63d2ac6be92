"""Another user of the machine attacks a running ``ExtremeScaleExecutor`` and gets nowhere:
with a local provider (blocks started by Parsl), and in job-script mode (``managed=False``, a
pool started by hand with the run's ``pool_command.sh``). See :mod:`attacker` for the attempts.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from attack_plan import (
    as_root,
    assert_refusals_logged,
    assert_refused,
    attack,
    slow_square,
    square,
    total,
    wait_logged,
)
from waiting import wait_for

from rankpool import ExtremeScaleExecutor
from rankpool.frontends.parsl.executor import local_provider
from rankpool.launchers.mpiexec import find_mpiexec

pytestmark = [as_root, pytest.mark.timeout(300)]


def attacked_run(ex: Any, block: str, open_dir: Path) -> None:
    """Attack while tasks are queued; then the run goes on, right, and the refusals are in
    the logs (the interchange's, and the pool's for the doorbell)."""
    run_dir, marker = Path(ex.log_dir), open_dir / "attacker-code-ran"
    assert ex.submit(total, {}, np.ones(300_000, np.uint8)).result(timeout=60) == 300_000
    wait_for(lambda: ex._client.command("pools"), timeout=60)
    (pool,) = ex._client.command("pools")
    queued = [ex.submit(slow_square, {}, i, 0.02) for i in range(150)]
    report = attack(run_dir, ex._client.ports, pool["pool_id"], ex._plane.prefix, marker)
    assert_refused(report, marker)
    assert [f.result(timeout=60) for f in queued] == [i * i for i in range(150)]
    assert [f.result(timeout=60) for f in [ex.submit(square, {}, i) for i in range(100)]] \
        == [i * i for i in range(100)]
    (after,) = ex._client.command("pools")
    assert after["pool_id"] == pool["pool_id"] and not after["held"] and not after["draining"]
    more = [ex.submit(slow_square, {}, i, 0.05) for i in range(40)]
    wait_logged(run_dir / f"pool-{block}.log", "from uid 65534")
    assert [f.result(timeout=60) for f in more] == [i * i for i in range(40)]
    assert_refusals_logged((run_dir / "interchange.log").read_text())
    assert not marker.exists()


def test_another_user_cannot_use_read_or_stop_a_parsl_run(load: Callable[..., Any],
                                                         open_dir: Path) -> None:
    ex = ExtremeScaleExecutor(label="xs", provider=local_provider(init_blocks=1, max_blocks=1),
                              ranks_per_node=3, heartbeat_period=0.5, heartbeat_threshold=5.0)
    load(ex, run_dir=str(open_dir / "runinfo"))
    attacked_run(ex, "0", open_dir)


def test_another_user_cannot_use_read_or_stop_a_job_script_run(load: Callable[..., Any],
                                                              open_dir: Path) -> None:
    ex = ExtremeScaleExecutor(label="xs", managed=False, shared_memory=True,
                              heartbeat_period=0.5, heartbeat_threshold=5.0)
    dfk = load(ex, run_dir=str(open_dir / "runinfo"))
    script = Path(ex.log_dir) / "pool_command.sh"
    assert os.stat(script).st_mode & 0o777 == 0o700
    proc = subprocess.Popen([find_mpiexec(), "-n", "3", "sh", str(script), "manual"],
                            start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        attacked_run(ex, "manual", open_dir)
    finally:
        dfk.cleanup()
        try:
            proc.wait(timeout=20)  # the interchange stopped the pool
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
