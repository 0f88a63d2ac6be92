"""Node-resource options: checking, the device binding, CPU sets, the pool command line."""

from __future__ import annotations

import os

import pytest

from rankpool.errors import ResourceSpecError
from rankpool.mpi_pool.config import PoolConfig, parse
from rankpool.task.node_resources import (
    NodeResources,
    apply_binding,
    block_devices,
    cpu_set,
    device_binding,
    device_ranks,
    devices_list,
    node_resources,
    node_workers,
    worker_index,
)
from rankpool.task.resources import DeviceCapacity, check_fits, parse_spec


def test_accelerators_count_list_and_default_variable() -> None:
    assert node_resources(4).accelerators == ("0", "1", "2", "3")
    assert node_resources(4).accelerator_env == "CUDA_VISIBLE_DEVICES"
    tiles = node_resources(["0.0", "0.1", "1.0"])
    assert tiles.accelerator_env == "ZE_AFFINITY_MASK"
    assert node_resources("2,3", "amd").accelerator_env == "ROCR_VISIBLE_DEVICES"
    assert node_resources([0, 1], "MY_DEVICE").accelerator_env == "MY_DEVICE"
    assert node_resources().accelerators == () and node_resources(0).accelerators == ()


@pytest.mark.parametrize("kwargs, name", [
    ({"accelerators": -1}, "accelerators"),
    ({"accelerators": True}, "accelerators"),
    ({"accelerators": ["a", "a"]}, "accelerators"),
    ({"accelerators": ["a b"]}, "accelerators"),
    ({"accelerators": [""]}, "accelerators"),
    ({"accelerators": 2.5}, "accelerators"),
    ({"accelerator_env": "1BAD"}, "accelerator_env"),
    ({"accelerator_env": "A-B"}, "accelerator_env"),
    ({"accelerator_env": 3}, "accelerator_env"),
    ({"ranks_per_accelerator": 0}, "ranks_per_accelerator"),
    ({"ranks_per_accelerator": True}, "ranks_per_accelerator"),
    ({"cpu_affinity": "compact"}, "cpu_affinity"),
    ({"cpu_affinity": []}, "cpu_affinity"),
    ({"cpu_affinity": [[0], [-1]]}, "cpu_affinity"),
    ({"cpu_affinity": ["3-1"]}, "cpu_affinity"),
    ({"cpu_affinity": "list:0:x"}, "cpu_affinity"),
])
def test_bad_options_are_refused_by_name(kwargs: dict, name: str) -> None:
    with pytest.raises((ValueError, TypeError), match=name):
        node_resources(**kwargs)


def test_devices_dealt_per_node_in_rank_order_rank_0_owning_none() -> None:
    nodes = [[1, 2, 3], [4, 5, 6, 7]]  # rank 0 sits on the first node
    res = node_resources(["a", "b"])
    assert device_binding(nodes, res) == {1: "a", 2: "b", 4: "a", 5: "b"}
    assert device_ranks(nodes, res) == [[1, 2], [4, 5]]
    assert devices_list(nodes, res) == ["", "a", "b", "", "a", "b", "", ""]
    shared = node_resources(["a", "b"], ranks_per_accelerator=2)
    assert device_binding(nodes, shared) == {1: "a", 2: "a", 3: "b", 4: "a", 5: "a", 6: "b",
                                             7: "b"}
    assert devices_list(nodes, NodeResources()) == []


def test_worker_index_counts_worker_ranks_of_the_node() -> None:
    nodes = [[1, 2], [3, 4, 5]]
    assert worker_index(nodes, 1) == (0, 2)
    assert worker_index(nodes, 5) == (2, 3)
    for bad in (0, 9):
        with pytest.raises(ValueError):
            worker_index(nodes, bad)


def test_cpu_sets_block_alternating_list() -> None:
    cpus = list(range(8))
    block, alt = node_resources(cpu_affinity="block"), node_resources(cpu_affinity="alternating")
    assert [sorted(cpu_set(block, i, 4, cpus)) for i in range(4)] == \
        [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert [sorted(cpu_set(alt, i, 4, cpus)) for i in range(4)] == \
        [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert cpu_set(block, 2, 3, [5, 9]) == {5}  # more ranks than CPUs: round robin
    listed = node_resources(cpu_affinity="list:0-1,6:2")
    assert listed.cpu_affinity == ((0, 1, 6), (2,))
    assert cpu_set(listed, 1, 2, cpus) == {2}
    with pytest.raises(ValueError, match="cpu_affinity"):
        cpu_set(listed, 2, 3, cpus)
    assert cpu_set(NodeResources(), 0, 1, cpus) == set(cpus)


def test_block_capacity_and_short_affinity_lists() -> None:
    assert node_workers(7, 2) == [3, 4]  # a rankpool launcher: the manager's slot on node 0
    assert node_workers(8, 2) == [4, 4]
    assert node_workers(6, 2, widest=3) == [3]  # one pool per node
    res = node_resources(["a", "b"])
    assert block_devices(res, [3, 4]) == DeviceCapacity(4, 2)
    assert block_devices(res, [1]) == DeviceCapacity(1, 1)
    assert block_devices(NodeResources(), [4]) == DeviceCapacity(0, 0)
    with pytest.raises(ValueError, match="cpu_affinity"):
        block_devices(node_resources(cpu_affinity=[[0], [1]]), [1, 3])
    block_devices(node_resources(cpu_affinity=[[0], [1]]), [1, 2])


def test_gpu_requests_no_pool_can_hold_are_refused_naming_the_key() -> None:
    gpu = parse_spec({"gpus_per_rank": 1, "num_ranks": 2})
    with pytest.raises(ResourceSpecError, match="gpus_per_rank") as info:
        check_fits(gpu, 8, 8)
    assert info.value.key == "gpus_per_rank"
    check_fits(gpu, 8, 8, DeviceCapacity(2, 2))
    with pytest.raises(ResourceSpecError, match="gpus_per_rank"):
        check_fits(parse_spec({"gpus_per_rank": 1, "num_ranks": 3}), 8, 8, DeviceCapacity(2, 2))
    with pytest.raises(ResourceSpecError, match="gpus_per_rank"):
        check_fits(parse_spec({"gpus_per_rank": 2}), 8, 8, DeviceCapacity(2, 2))
    with pytest.raises(ResourceSpecError, match="gpus_per_rank"):
        check_fits(parse_spec({"gpus_per_rank": 1, "num_ranks": 2, "ranks_per_node": 2}),
                   8, 8, DeviceCapacity(2, 1))
    check_fits(parse_spec({"gpus_per_rank": 0}), 8, 8)


def test_pool_command_line_round_trip_and_refusals(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--interchange", "tcp://127.0.0.1:5", "--block-id", "1"]
    cfg = parse(base + ["--accelerators", "6", "--ranks-per-accelerator", "2",
                        "--cpu-affinity", "list:0-3:4-7", "--accelerator-env", "intel"])
    assert cfg.resources == node_resources(6, "ZE_AFFINITY_MASK", 2, [[0, 1, 2, 3], [4, 5, 6, 7]])
    assert parse(cfg.to_argv()) == cfg
    assert PoolConfig("tcp://h:1", "b").to_argv() \
        == ["--interchange", "tcp://h:1", "--block-id", "b"]
    for bad, name in ((["--accelerators", "a,a"], "accelerators"),
                      (["--cpu-affinity", "tight"], "cpu_affinity"),
                      (["--ranks-per-accelerator", "0"], "ranks_per_accelerator")):
        with pytest.raises(SystemExit):
            parse(base + bad)
        assert name in capsys.readouterr().err


def test_apply_binding_sets_the_variable_and_never_widens_affinity(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RP_UNIT_DEVICE", raising=False)
    mask = os.sched_getaffinity(0)
    try:
        nodes = [[1, 2]]
        res = node_resources(["g0"], "RP_UNIT_DEVICE")
        assert apply_binding(0, nodes, res) is None and "RP_UNIT_DEVICE" not in os.environ
        assert apply_binding(2, nodes, res) is None and "RP_UNIT_DEVICE" not in os.environ
        assert apply_binding(1, nodes, res) == "g0" and os.environ["RP_UNIT_DEVICE"] == "g0"
        outside = max(mask) + 1000  # a CPU not in the mask: the mask is kept
        apply_binding(1, nodes, node_resources(cpu_affinity=[[outside], [outside]]))
        assert os.sched_getaffinity(0) == mask
        first = min(mask)
        apply_binding(1, nodes, node_resources(cpu_affinity=[[first], [outside]]))
        assert os.sched_getaffinity(0) == {first}
    finally:
        os.sched_setaffinity(0, mask)


def test_status_rows_count_the_ranks_that_own_a_device() -> None:
    from rankpool.cli import _pool_row
    pool = {"block_id": "0", "pool_id": "p", "hosts": ["h"], "node_ranks": [3], "ranks": 3,
            "busy_ranks": 1, "tasks": 1, "held": False, "draining": False, "last_seen_s": 0.5,
            "devices": {"1": "a", "2": "b"}}
    assert _pool_row(pool)[3] == "3(2dev)"
    assert _pool_row({**pool, "devices": {}})[3] == "3"
