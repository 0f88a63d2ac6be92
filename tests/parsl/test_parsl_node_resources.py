"""ExtremeScaleExecutor with node resources: fake devices bound per rank, the binding in
``connected_managers()``, per-task env and cwd, and refusals at construction and submit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import xs_apps as apps
from xs_factory import xs

from rankpool import ExtremeScaleExecutor, ResourceSpecError

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("kwargs, name", [
    ({"accelerators": ["a", "a"]}, "accelerators"),
    ({"accelerator_env": "not a name"}, "accelerator_env"),
    ({"ranks_per_accelerator": 0}, "ranks_per_accelerator"),
    ({"cpu_affinity": "scatter"}, "cpu_affinity"),
    ({"cpu_affinity": [[0]], "ranks_per_node": 2}, "cpu_affinity"),
])
def test_bad_node_resource_options_are_refused_by_name(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        ExtremeScaleExecutor(**kwargs)


def test_devices_bound_and_shown_and_keys_applied(load: Any, tmp_path: Path) -> None:
    dfk = load(xs(ranks_per_node=3, accelerators=2, accelerator_env="RP_PARSL_DEVICE"))
    ex = dfk.executors["xs"]
    gpu = {"num_ranks": 2, "gpus_per_rank": 1, "results": "all"}
    seen = apps.device_and_env(parsl_resource_specification=gpu).result(timeout=60)
    assert [s[:2] for s in seen] == [[1, "0"], [2, "1"]]
    [pool] = ex.connected_managers()
    assert pool["devices"] == {"1": "0", "2": "1"}
    assert "--accelerators 0,1 --accelerator-env RP_PARSL_DEVICE" in ex.pool_command()
    where = str(tmp_path / "work")
    spec = {"env": {"RP_STAGE": "on"}, "cwd": where}
    rank, _, stage, cwd = apps.device_and_env(parsl_resource_specification=spec).result(timeout=60)
    assert (rank, stage, cwd) == (3, "on", where)  # a CPU task keeps off the device ranks
    with pytest.raises(ResourceSpecError, match="gpus_per_rank"):
        apps.device_and_env(parsl_resource_specification={"num_ranks": 3, "gpus_per_rank": 1}) \
            .result(timeout=60)
