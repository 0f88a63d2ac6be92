"""CommExecutor with node resources under a real ``mpiexec -n 4``.

Worker ranks 1-3 of the pool share devices two by two (``ranks_per_accelerator=2``): ranks 1
and 2 own "x", rank 3 owns "y". The case runs on rank 0 inside the executor's ``with`` block
and records what it saw; the test beside it asserts on that (see ``tests/mpi_cases.py``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from mpi_cases import record, run_case, serve

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(180)]

HERE = Path(__file__).resolve()
VAR = "RP_MPI_DEVICE"


def seen(comm: Any = None) -> list[Any]:
    from mpi4py import MPI
    return [MPI.COMM_WORLD.Get_rank(), os.environ.get(VAR), os.environ.get("RP_STAGE"),
            os.environ.get("OMP_NUM_THREADS"), os.getcwd()]


def case_devices(ex: Any) -> None:
    from rankpool import ResourceSpecError
    record("root_device", os.environ.get(VAR))
    gpu3 = ex.requirements(num_ranks=3, gpus_per_rank=1, results="all")
    record("devices", [s[:2] for s in gpu3.submit(seen).result(timeout=60)])
    try:
        ex.requirements(num_ranks=4, gpus_per_rank=1).submit(seen)
    except ResourceSpecError as exc:
        record("too_wide", exc.key)
    with tempfile.TemporaryDirectory() as tmp:
        where = os.path.join(tmp, "made")
        spec = ex.requirements(num_ranks=2, results="all", threads_per_rank=3,
                               env={"RP_STAGE": "during"}, cwd=where)
        record("during", [s[2:] for s in spec.submit(seen).result(timeout=60)] == [
            ["during", "3", where]] * 2)
        after = ex.requirements(num_ranks=3, results="all").submit(seen).result(timeout=60)
        record("after", all(s[2] is None and s[3] is None and s[4] != where for s in after))


def test_shared_devices_env_and_cwd_in_a_comm_executor(tmp_path: Path) -> None:
    run = run_case(HERE, "devices", 4, tmp_path, timeout=60)
    assert run["root_device"] is None                  # root (the manager) owns no device
    assert run["devices"] == [[1, "x"], [2, "x"], [3, "y"]]  # two ranks per device
    assert run["too_wide"] == "gpus_per_rank"
    assert run["during"] is True and run["after"] is True


if __name__ == "__main__":
    serve(globals(), accelerators=["x", "y"], accelerator_env=VAR, ranks_per_accelerator=2)
