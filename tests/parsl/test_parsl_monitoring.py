"""The monitoring database of a run on ExtremeScaleExecutor, read back with sqlite3."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from parsl.monitoring import MonitoringHub

pytest.importorskip("sqlalchemy", reason="monitoring needs parsl[monitoring] (sqlalchemy)")

import xs_apps as apps
from xs_factory import xs

pytestmark = pytest.mark.timeout(120)


def test_monitoring_database_has_this_executors_rows(load: Any, tmp_path: Path) -> None:
    db = tmp_path / "monitoring.db"
    hub = MonitoringHub(logging_endpoint=f"sqlite:///{db}", resource_monitoring_interval=0.5)
    dfk = load(xs(ranks_per_node=2), monitoring=hub)
    one = apps.busy(0.6)
    two = apps.busy(0.6, parsl_resource_specification={"num_ranks": 2})
    assert (one.result(timeout=60), two.result(timeout=60)) == (1, 2)
    run_id = dfk.run_id
    dfk.cleanup()

    con = sqlite3.connect(db)
    try:
        def rows(sql: str) -> list[tuple[Any, ...]]:
            return con.execute(sql, (run_id,)).fetchall()

        blocks = rows("SELECT block_id, status FROM block "
                      "WHERE run_id = ? AND executor_label = 'xs'")
        assert ("0", "PENDING") in blocks and ("0", "SCALED_IN") in blocks
        nodes = rows("SELECT block_id, worker_count, active, python_v FROM node WHERE run_id = ?")
        assert ("0", 2, 1) in {n[:3] for n in nodes} and ("0", 2, 0) in {n[:3] for n in nodes}
        tasks = rows("SELECT task_id, task_func_name, task_time_returned "
                     "FROM task WHERE run_id = ?")
        assert {t[1] for t in tasks} == {"busy"} and all(t[2] for t in tasks)
        tries = rows("SELECT task_id, try_id, task_executor, block_id, hostname, "
                     "task_try_time_running FROM try WHERE run_id = ?")
        assert len(tries) == 2
        assert all(t[2] == "xs" and t[3] == "0" and t[4] and t[5] for t in tries)
        statuses = {(task, status) for task, status in
                    rows("SELECT task_id, task_status_name FROM status WHERE run_id = ?")}
        for task in (one.tid, two.tid):
            for status in ("launched", "running", "running_ended", "exec_done"):
                assert (task, status) in statuses
        resources = rows("SELECT task_id, psutil_process_pid FROM resource WHERE run_id = ?")
        assert {r[0] for r in resources} == {one.tid, two.tid}
        # the 2-rank task was watched on both of its ranks
        assert len({r[1] for r in resources if r[0] == two.tid}) == 2
    finally:
        con.close()
