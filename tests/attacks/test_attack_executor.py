"""Another user of the machine attacks a running ``rankpool.Executor`` and gets nowhere.

The attacker (``nobody``, see :mod:`attacker`) registers pools, sends results and tasks,
commands and oversized messages to every port, plain and with CurveZMQ keys of its own, rings
every doorbell, and tries to read the run directory, its files and the run's shared memory,
and to run ``rankpool status``, while tasks are queued and running. Every attempt is refused,
each refusal is logged, the run goes on and every task's result is right.
"""

from __future__ import annotations

import stat
from pathlib import Path

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

from rankpool import Executor

pytestmark = [as_root, pytest.mark.timeout(240)]


def test_another_user_cannot_use_read_or_stop_an_executor(open_dir: Path) -> None:
    run_dir, marker = open_dir / "run", open_dir / "attacker-code-ran"
    with Executor(max_ranks=2, run_dir=str(run_dir), heartbeat_period=0.5,
                  heartbeat_threshold=5.0) as ex:
        assert ex.submit(total, np.ones(300_000, np.uint8)).result(timeout=60) == 300_000
        assert ex._plane is not None  # the argument went through a /dev/shm segment
        (pool,) = ex.pools()
        queued = [ex.submit(slow_square, i, 0.02) for i in range(150)]
        report = attack(run_dir, ex.client.ports, pool["pool_id"], ex._plane.prefix, marker)
        assert_refused(report, marker)

        # the run goes on: what was queued, and more, all right; the pool was never held
        assert [f.result(timeout=60) for f in queued] == [i * i for i in range(150)]
        assert [p["pool_id"] for p in ex.pools()] == [pool["pool_id"]]
        assert not ex.pools()[0]["held"] and not ex.pools()[0]["draining"]
        assert list(ex.map(square, range(100))) == [i * i for i in range(100)]
        # rank 0 reads its bell while tasks are out: the rings from nobody are logged, ignored
        more = [ex.submit(slow_square, i, 0.05) for i in range(40)]
        wait_logged(run_dir / "pool-0.log", "from uid 65534")
        assert [f.result(timeout=60) for f in more] == [i * i for i in range(40)]
        assert_refusals_logged((run_dir / "interchange.log").read_text())
    assert not marker.exists()
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in run_dir.rglob("*")}
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert all(m in (0o600, 0o700) for m in modes.values()), modes
