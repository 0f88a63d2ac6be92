"""Blocks that cannot start say so: on the one-machine Slurm, with nodes shared between jobs.

Each case makes block 0 fail on purpose before its pool registers: a launcher option Slurm
refuses, a ``worker_init`` that exits 1, a Python whose rankpool has no pool program, a rank
that dies before ``MPI_Init`` while the others wait there. The
app must fail within a bounded time with an error that quotes the cause, no job may be left
in ``squeue`` (the executor submits no replacement and cancels what it has), and
``rankpool status`` must show the failed start.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import slurm_apps as apps
from slurm_helpers import executor, our_jobs, provider
from waiting import wait_for

from rankpool.cli import main as rankpool_main
from rankpool.launchers import SrunLauncher

pytestmark = pytest.mark.timeout(150)

#: the longest an app may wait for its executor to give up on a block that cannot start
BOUND = 60.0

SHADOW = ("mkdir -p {d}/rankpool && : > {d}/rankpool/__init__.py && export PYTHONPATH={d}")
DIE_AT_START = ("export RANKPOOL_TEST_DIE_AT_START=2:exit3 "
                f"PYTHONPATH={Path(__file__).resolve().parent.parent / 'rank_start_fault'}"
                ":$PYTHONPATH")

CASES = {
    # srun itself refuses the option: the job ends at once, srun's message in its stderr
    "launcher_option": ({"extra": "--no-such-srun-option"}, {},
                        "unrecognized option '--no-such-srun-option'"),
    "worker_init": ({}, {"worker_init": "echo 'worker_init: module rankpool-env not found' >&2;"
                                        " exit 1"},
                    "worker_init: module rankpool-env not found"),
    # a rankpool package without the pool program shadows the real one (an old or foreign one)
    "python": ({}, {"worker_init": SHADOW}, "No module named rankpool.mpi_pool"),
    # a rank on n2 dies before MPI_Init (see tests/rank_start_fault): srun's step would go on
    # (--kill-on-bad-exit=0) with the others in MPI_Init; the dead rank's keeper cancels it
    "rank_dies": ({}, {"worker_init": DIE_AT_START},
                  "exited with status 3 before the pool started; the other ranks would wait"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_block_that_cannot_start_fails_the_app_with_the_cause(
        load: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    launcher_options, provider_options, cause = CASES[case]
    if "worker_init" in provider_options:
        provider_options = {"worker_init": provider_options["worker_init"].format(
            d=tmp_path / "shadow")}
    launcher = SrunLauncher(ranks_per_node=2, mpi="pmi2", **launcher_options)
    prov = provider(launcher, nodes_per_block=2, exclusive=False, max_blocks=2,
                    **provider_options)
    dfk = load(executor(prov))
    ex = dfk.executors["rpslurm"]
    start = time.monotonic()
    future = apps.where(parsl_resource_specification={"num_ranks": 3})
    with pytest.raises(Exception) as failed:
        future.result(timeout=BOUND)
    assert time.monotonic() - start < BOUND
    assert cause in str(failed.value), str(failed.value)
    assert "block 0" in str(failed.value) and "before its pool registered" in str(failed.value)
    assert ex.bad_state_is_set and list(ex.blocks_to_job_id) == ["0"]  # no replacement block
    wait_for(lambda: not our_jobs(), timeout=30)

    assert rankpool_main(["status", "--once", str(Path(ex.run_dir) / ex.label)]) == 0
    out = capsys.readouterr().out
    assert "failed starts  1 block ended before their pool registered" in out, out
    assert "block 0 (job " in out and cause in out, out


def test_pool_that_cannot_reach_the_interchange_is_reported(
        load: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pools are given a loopback port nobody listens on (as a wrong ``address`` or a
    firewall would leave them): each gives up after the heartbeat threshold (3 s here) and the
    executor fails the app with the address the pool tried."""
    from rankpool.frontends.client import InterchangeClient
    bad = f"tcp://127.0.0.1:{closed_port()}"
    monkeypatch.setattr(InterchangeClient, "pool_address", property(lambda self: bad))
    prov = provider(SrunLauncher(ranks_per_node=2, mpi="pmi2"), nodes_per_block=2,
                    exclusive=False, max_blocks=2)
    dfk = load(executor(prov))
    ex = dfk.executors["rpslurm"]
    future = apps.where(parsl_resource_specification={"num_ranks": 3})
    with pytest.raises(Exception) as failed:
        future.result(timeout=BOUND)
    text = str(failed.value)
    assert "the pool could not reach the interchange" in text, text
    assert f"no answer from the interchange at {bad} for 3 s" in text, text
    assert ex.bad_state_is_set and list(ex.blocks_to_job_id) == ["0"]
    wait_for(lambda: not our_jobs(), timeout=30)


def closed_port() -> int:
    """A loopback port that was free a moment ago (nothing listens on it)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
