"""ExtremeScaleExecutor under a real DataFlowKernel: tasks, resource specs, DFK features."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import xs_apps as apps
from parsl.app.errors import BashExitFailure
from parsl.data_provider.files import File
from parsl.dataflow.memoization import BasicMemoizer
from parsl.launchers import SimpleLauncher, SingleNodeLauncher
from parsl.providers import LocalProvider
from parsl.utils import get_all_checkpoints
from xs_factory import xs

from rankpool import ExtremeScaleExecutor, ResourceSpecError

pytestmark = pytest.mark.timeout(90)


# -- construction ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, name", [
    ({"label": ""}, "label"),
    ({"ranks_per_node": 0}, "ranks_per_node"),
    ({"heartbeat_period": -1}, "heartbeat_period"),
    ({"heartbeat_period": 5, "heartbeat_threshold": 1}, "heartbeat_threshold"),
    ({"pool_port": 70000}, "pool_port"),
    ({"port_range": (5, 2)}, "port_range"),
    ({"drain_period": 0}, "drain_period"),
    ({"launch_cmd": "mpiexec -n {ranks}"}, "launch_cmd"),
    ({"launch_cmd": "{nope} {command}"}, "launch_cmd"),
    ({"log_level": "LOUD"}, "log_level"),
    ({"address": ""}, "address"),
])
def test_bad_arguments_are_refused_by_name(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        ExtremeScaleExecutor(**kwargs)


def test_wrong_types_and_unsupported_options() -> None:
    with pytest.raises(TypeError, match="provider"):
        ExtremeScaleExecutor(provider="local")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="managed"):
        ExtremeScaleExecutor(managed="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="encrypted"):
        ExtremeScaleExecutor(encrypted="yes")  # type: ignore[arg-type]
    # one copy per node: never one MPI application
    with pytest.raises(ValueError, match="launcher"):
        ExtremeScaleExecutor(provider=LocalProvider(launcher=SingleNodeLauncher()))
    with pytest.raises(ValueError, match="SimpleLauncher"):
        ExtremeScaleExecutor(provider=LocalProvider(launcher=SimpleLauncher()))
    ex = ExtremeScaleExecutor(provider=LocalProvider(launcher=SimpleLauncher()), ranks_per_node=3,
                              launch_cmd="mpiexec -n {ranks} {command}")
    assert ex.workers_per_node == 3 and "ExtremeScaleExecutor(" in repr(ex)


def test_rankpool_launchers_set_the_block_shape() -> None:
    from parsl.launchers import SrunLauncher as ParslSrunLauncher
    from parsl.providers import SlurmProvider

    from rankpool.launchers import SrunLauncher
    one = SrunLauncher()  # ranks_per_node counts every rank of a node, the manager included
    ex = ExtremeScaleExecutor(provider=SlurmProvider(nodes_per_block=1, launcher=one),
                              ranks_per_node=4)
    assert one.ranks_per_node == 4 and ex.workers_per_node == 3  # 3 workers and the manager
    assert one("CMD", 1, 1).startswith("srun --ntasks 4 ")
    two = SrunLauncher(ranks_per_node=4)  # the manager takes one slot of the first node
    ex = ExtremeScaleExecutor(provider=SlurmProvider(nodes_per_block=2, launcher=two))
    assert ex.workers_per_node == 3.5 and ex.ranks_per_node == 4  # 7 worker ranks on 2 nodes
    with pytest.raises(ValueError, match="ranks_per_node=4 .*SrunLauncher\\(ranks_per_node=3\\)"):
        ExtremeScaleExecutor(provider=SlurmProvider(launcher=SrunLauncher(ranks_per_node=3)),
                             ranks_per_node=4)
    with pytest.raises(ValueError, match="allow_per_node_launcher"):  # one pool per node
        ExtremeScaleExecutor(provider=SlurmProvider(launcher=ParslSrunLauncher()), ranks_per_node=4)
    ex = ExtremeScaleExecutor(provider=SlurmProvider(nodes_per_block=2,
                                                     launcher=ParslSrunLauncher()),
                              ranks_per_node=4, allow_per_node_launcher=True,
                              launch_cmd="mpiexec -n {ranks} {command}")
    assert ex.workers_per_node == 3  # two pools of 4 ranks: 3 workers each


# -- tasks -----------------------------------------------------------------------------------------
def test_issue_example_and_resource_specs(load: Any) -> None:
    load(xs(ranks_per_node=4))
    assert apps.solve(1, parsl_resource_specification={"num_ranks": 4}).result(timeout=60) == 4
    all_ranks = apps.rank_and_size(parsl_resource_specification={"num_ranks": 3, "results": "all"})
    assert all_ranks.result(timeout=30) == [(0, 3), (1, 3), (2, 3)]
    assert apps.first_arg_comm(None, 5, parsl_resource_specification={"ranks": 2}) \
        .result(timeout=30) == 10
    assert apps.rank_and_size().result(timeout=30) == (0, 1)  # 1-rank task: a size-1 communicator
    # an exception on a rank other than the root fails the task (Parsl returns it as a value)
    for results in ("root", "all"):
        failing = apps.fail_on_rank(2, parsl_resource_specification={"num_ranks": 3,
                                                                     "results": results})
        with pytest.raises(ValueError, match="rank 2 failed"):
            failing.result(timeout=30)
    # the keyword goes to functions that declare it (or take **kwargs), not to the others
    spec = {"num_ranks": 1, "priority": 3}
    assert apps.echo_spec(parsl_resource_specification=spec).result(timeout=30) == spec
    assert apps.no_comm(7, parsl_resource_specification=spec).result(timeout=30) == 7
    assert "parsl_resource_specification" in apps.takes_kwargs(
        parsl_resource_specification=spec).result(timeout=30)
    # refused at submit, with the key named
    with pytest.raises(ResourceSpecError, match="'launcher_options'"):
        apps.double(1, parsl_resource_specification={"launcher_options": 3}).result(timeout=30)
    with pytest.raises(ResourceSpecError, match="num_ranks"):
        apps.solve(1, parsl_resource_specification={"num_ranks": 5}).result(timeout=30)
    # a function without comm on 2 ranks runs once, as an MPI application task
    assert apps.no_comm(1, parsl_resource_specification={"num_ranks": 2}).result(timeout=30) == 1


def test_large_arrays_travel_through_shared_memory(load: Any) -> None:
    import numpy as np

    from rankpool.shm import run as shm_run
    ex = xs(ranks_per_node=2)
    dfk = load(ex)
    assert ex._plane is not None  # on by default: the local provider's blocks run here
    prefix = ex._plane.prefix
    a = np.random.default_rng(1).random(64 * 2**20 // 8)
    np.testing.assert_array_equal(apps.echo(a).result(timeout=60), a)
    assert ex._plane.arena.segments and ex._plane.arena.in_use() == 0
    dfk.cleanup()
    assert not [n for n in os.listdir(shm_run.SHM_DIR) if n.startswith(prefix)]


def test_shared_memory_choice() -> None:
    with pytest.raises(TypeError, match="shared_memory must be True, False or None"):
        ExtremeScaleExecutor(shared_memory=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shared_memory_cap"):
        ExtremeScaleExecutor(shared_memory_cap=-1)
    assert ExtremeScaleExecutor()._use_shm
    assert not ExtremeScaleExecutor(shared_memory=False)._use_shm
    assert not ExtremeScaleExecutor(managed=False)._use_shm
    other = LocalProvider(launcher=SimpleLauncher())  # the launch command may start ranks anywhere
    assert not ExtremeScaleExecutor(provider=other, ranks_per_node=2,
                                    launch_cmd="mpiexec -n {ranks} {command}")._use_shm


def test_dependencies_join_bash_and_files(load: Any, tmp_path: Path) -> None:
    # also: a launch_cmd override around Parsl's SimpleLauncher, working_dir and worker_debug
    workdir = tmp_path / "work"
    workdir.mkdir()
    dfk = load(xs(provider=LocalProvider(launcher=SimpleLauncher(), init_blocks=1, max_blocks=1),
                  launch_cmd="{mpiexec} -n {ranks} {command}", working_dir=str(workdir),
                  worker_debug=True))
    assert apps.cwd().result(timeout=60) == str(workdir)
    assert (Path(dfk.executors["xs"].log_dir) / "pool-0-rank1.log").exists()
    total = apps.add(apps.double(1), apps.double(apps.add(1, 1)))
    assert total.result(timeout=60) == 6
    assert apps.sum_of_doubles(2, 3).result(timeout=30) == 10
    out = File(str(tmp_path / "words.txt"))
    written = apps.write_words("one two three", outputs=[out])
    assert written.result(timeout=30) == 0
    assert apps.count_words(inputs=[written.outputs[0]]).result(timeout=30) == 3
    with pytest.raises(BashExitFailure):
        apps.write_words("x", outputs=[File("/nonexistent-dir/out.txt")]).result(timeout=30)


def test_retries_with_a_retry_handler(load: Any, tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []

    def handler(exc: Exception, record: Any) -> float:
        seen.append((type(exc).__name__, record["id"]))
        return 0.5

    load(xs(), retries=2, retry_handler=handler)
    assert apps.fails_once(str(tmp_path / "marker")).result(timeout=60) == "second try"
    assert seen == [("ValueError", 0)]
    with pytest.raises(KeyError, match="always"):
        apps.always_fails().result(timeout=60)
    assert [name for name, task in seen if task == 1] == ["KeyError"] * 5  # cost 0.5 of 2 retries


def test_app_caching_and_checkpointing(load: Any, tmp_path: Path) -> None:
    counter = str(tmp_path / "counter")
    run_dir = str(tmp_path / "runinfo")
    dfk = load(xs(), memoizer=BasicMemoizer(checkpoint_mode="task_exit"), run_dir=run_dir)
    assert apps.square_counted(3, counter).result(timeout=60) == 9
    assert apps.square_counted(3, counter).result(timeout=30) == 9  # from the in-memory cache
    assert Path(counter).read_text().split() == ["3"]
    dfk.cleanup()
    checkpoints = get_all_checkpoints(run_dir)
    assert checkpoints
    load(xs(), memoizer=BasicMemoizer(checkpoint_files=checkpoints), run_dir=run_dir)
    assert apps.square_counted(3, counter).result(timeout=30) == 9  # from the checkpoint
    assert apps.square_counted(4, counter).result(timeout=60) == 16
    assert Path(counter).read_text().split() == ["3", "4"]


def test_priority_orders_waiting_tasks(load: Any, tmp_path: Path, wait_for: Any) -> None:
    dfk = load(xs(ranks_per_node=1))
    ex = dfk.executors["xs"]
    assert apps.double(1).result(timeout=60) == 2
    ex.hold_block("0")  # everything waits in the interchange until the release
    order = str(tmp_path / "order")
    futures = [apps.append_line(order, f"p{p}", parsl_resource_specification={"priority": p})
               for p in (0, 1, 5, 2, 9)]
    wait_for(lambda: ex.queued_tasks() == 5, timeout=30)
    ex.release_block("0")
    for f in futures:
        f.result(timeout=30)
    assert Path(order).read_text().split() == ["p9", "p5", "p2", "p1", "p0"]
