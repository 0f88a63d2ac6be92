"""Parsl apps that exit: the app fails, the workflow goes on; a clean stop leaves nothing."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from leftovers import MARKER_ENV, Watch
from parsl import python_app
from xs_factory import xs

from rankpool import TaskExit

pytestmark = pytest.mark.timeout(120)


@python_app
def leave(how: str, comm: Any = None) -> int:
    """Raise ``how`` on the task's rank 0; the other ranks return their rank."""
    if comm.Get_rank() == 0:
        if how == "exit":
            sys.exit(7)
        raise KeyboardInterrupt()
    return comm.Get_rank()


@python_app
def width(comm: Any = None) -> int:
    return comm.allreduce(1)


@pytest.mark.parametrize("ranks", [1, 4])
def test_an_app_that_exits_fails_and_the_workflow_goes_on(load, ranks: int) -> None:
    """sys.exit() and KeyboardInterrupt in a 1-rank and a 4-rank app fail that app with
    TaskExit; the apps after it run on the same pool."""
    load(xs(ranks_per_node=4))
    spec = {"num_ranks": ranks}
    for how, type_name, code in (("exit", "SystemExit", 7),
                                 ("interrupt", "KeyboardInterrupt", None)):
        exc = leave(how, parsl_resource_specification=spec).exception(timeout=60)
        assert isinstance(exc, TaskExit), repr(exc)
        assert (exc.type_name, exc.code) == (type_name, code)
        assert width(parsl_resource_specification=spec).result(timeout=60) == ranks


def test_a_clean_stop_ends_the_block_by_itself(load, tmp_path: Path) -> None:
    """dfk.cleanup(): the pool stops, its ranks return from MPI_Finalize and the job ends by
    itself (exit code 0 in the local job's exit-code file, not '-': not cancelled), leaving no
    process and no /dev/shm file of the run."""
    ex = xs(ranks_per_node=2)
    dfk = load(ex)
    assert width(parsl_resource_specification={"num_ranks": 2}).result(timeout=60) == 2
    assert Path(ex.executor_dir) == tmp_path / "runinfo" / "000" / "xs"  # job scripts' RUN_DIR
    assert (Path(ex.executor_dir) / "pool_command.sh").exists()
    watch = Watch(os.getpid(), os.environ[MARKER_ENV])  # the job is detached from pytest
    watch.look()
    dfk.cleanup()
    procs, files = watch.gone(timeout=10)
    assert procs == [], [p.cmdline() for p in procs]
    assert files == []
    codes = [p.read_text().strip() for p in (tmp_path / "runinfo").rglob("*.ec")]
    assert codes == ["0"]
    errs = [p.read_text() for p in (tmp_path / "runinfo").rglob("parsl.xs.block-*.err")]
    assert errs == [""]
