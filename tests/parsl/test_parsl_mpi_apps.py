"""Parsl bash apps written for Parsl's MPI mode run unchanged on ExtremeScaleExecutor: each is
an MPI application task on the ranks its ``parsl_resource_specification`` asks for."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest
import xs_mpi_apps as apps
from parsl.app.errors import BashExitFailure
from parsl.executors import MPIExecutor
from parsl.launchers import SimpleLauncher
from parsl.providers import LocalProvider
from xs_factory import xs

pytestmark = pytest.mark.mpi

SAID = re.compile(r"rank (\d+) size (\d+) host (\S+?) pid")


def world_of(path: Path) -> list[tuple[int, int]]:
    """(rank, size) of every rank of the program, from its stdout file, in rank order."""
    return sorted((int(r), int(s)) for r, s, _ in SAID.findall(path.read_text()))


def parsl_specs() -> list[dict[str, Any]]:
    """The specifications of Parsl's MPI mode (whole nodes), which rankpool reads the same way."""
    return [{"num_nodes": 1, "ranks_per_node": n} for n in (2, 4, 3)]


def run_apps(tmp_path: Path, tag: str, specs: list[dict[str, Any]]) -> list[list[tuple[int, int]]]:
    """The same apps, whatever the loaded executor, on 2, 4 and 3 ranks."""
    futures = []
    for i, spec in enumerate(specs):
        out = tmp_path / f"{tag}-{i}.out"
        futures.append((out, apps.world(parsl_resource_specification=spec, stdout=str(out),
                                        stderr=str(tmp_path / f"{tag}-{i}.err"))))
    for _, f in futures:
        assert f.result(timeout=120) == 0
    return [world_of(out) for out, _ in futures]


def expected() -> list[list[tuple[int, int]]]:
    return [[(r, n) for r in range(n)] for n in (2, 4, 3)]


def test_bash_apps_with_output_files_failures_and_retries(load: Any, tmp_path: Path) -> None:
    load(xs(ranks_per_node=5), retries=1)
    specs = [{"num_ranks": 2}, {"num_nodes": 1, "ranks_per_node": 4}, {"ranks": 3}]
    assert run_apps(tmp_path, "xs", specs) == expected()
    # a failing application is Parsl's own BashExitFailure, after the retry failed too
    err = tmp_path / "fail.err"
    failing = apps.world(code=3, parsl_resource_specification={"num_ranks": 2},
                         stdout=str(tmp_path / "fail.out"), stderr=str(err))
    with pytest.raises(BashExitFailure) as info:
        failing.result(timeout=120)
    assert info.value.exitcode != 0
    assert "rank 0 fails with 3" in err.read_text()
    # the retry runs the application again, and it succeeds
    out = tmp_path / "retry.out"
    again = apps.world_fails_once(str(tmp_path / "marker"),
                                  parsl_resource_specification={"num_ranks": 4},
                                  stdout=str(out), stderr=str(tmp_path / "retry.err"))
    assert again.result(timeout=120) == 0
    assert again.task_record["try_id"] == 1
    # both tries ran the application on 4 ranks (Parsl appends each try's output)
    assert world_of(out) == sorted([(r, 4) for r in range(4)] * 2)


def test_an_mpi_executor_config_swapped_for_extreme_scale(load: Any, tmp_path: Path) -> None:
    # MPIExecutor reads a batch job's node list: a PBS_NODEFILE naming this host stands in
    nodefile = tmp_path / "nodefile"
    nodefile.write_text(socket.gethostname() + "\n")
    mpi = MPIExecutor(label="mpi", max_workers_per_block=1, mpi_launcher="mpiexec",
                      provider=LocalProvider(launcher=SimpleLauncher(), init_blocks=1,
                                             max_blocks=1,
                                             worker_init=f"export PBS_NODEFILE={nodefile}"))
    dfk = load(mpi)
    specs = parsl_specs()
    assert run_apps(tmp_path, "mpi", specs) == expected()
    dfk.cleanup()
    # Parsl's MPI mode wrote its counts into the mappings, as strings: the same mappings serve
    assert [s["num_ranks"] for s in specs] == ["2", "4", "3"]
    load(xs(ranks_per_node=5))  # the only change: the executor
    assert run_apps(tmp_path, "xs", specs) == expected()
