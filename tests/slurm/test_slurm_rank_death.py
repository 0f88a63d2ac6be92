"""A worker rank that dies on another node than rank 0's costs its task, not the pool.

One pool spans the fake nodes n1 and n2 (rank 0 and one worker on n1, two workers on n2), as a
Slurm job started with ``srun`` or with Hydra's ``mpiexec`` inside the allocation. A 2-rank task
runs on n2, where one of its ranks is killed: its keeper there sends the death note to rank 0
on n1, the task fails with :class:`~rankpool.WorkerLost` naming n2 and SIGKILL, and the pool
serves on with its other two worker ranks (one per node), reporting the lost rank.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest
import slurm_apps as apps
from slurm_helpers import executor, provider
from waiting import wait_for

from rankpool import WorkerLost
from rankpool.launchers import MpiexecLauncher, SrunLauncher

pytestmark = pytest.mark.timeout(150)

LAUNCHERS = {
    "srun": lambda: SrunLauncher(ranks_per_node=2, mpi="pmi2"),
    "mpiexec": lambda: MpiexecLauncher(ranks_per_node=2),
}


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_a_rank_dying_on_another_node_fails_its_task_only(load: Any, name: str) -> None:
    dfk = load(executor(provider(LAUNCHERS[name](), nodes_per_block=2)))
    ex = dfk.executors["rpslurm"]
    [pool] = wait_for(lambda: ex.connected_managers(), timeout=60)
    assert pool["node_ranks"] == [1, 2]  # rank 0 and one worker on n1, two workers on n2

    doomed = apps.second_rank_killed(parsl_resource_specification={"num_ranks": 2})
    with pytest.raises(WorkerLost) as info:
        doomed.result(timeout=60)
    lost = info.value
    assert lost.rank in (2, 3) and lost.host == "n2" and lost.signal == signal.SIGKILL
    assert f"worker rank {lost.rank} (pid {lost.pid} on n2) was killed by signal 9" in str(lost)

    [pool] = wait_for(lambda: [p for p in ex.connected_managers() if p.get("lost_ranks")],
                      timeout=30)
    assert pool["lost_ranks"] == [lost.rank]
    both = apps.where(parsl_resource_specification={"num_ranks": 2, "results": "all"})
    assert {r["node"] for r in both.result(timeout=60)} == {"n1", "n2"}  # the two left
    singles = [apps.where() for _ in range(6)]
    assert {f.result(timeout=60)["node"] for f in singles} <= {"n1", "n2"}
