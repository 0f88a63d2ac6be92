"""CommExecutor with node resources: ``mpiexec -n 4 python node_cases.py``.

Worker ranks 1-3 of the pool share device "x" two by two (``ranks_per_accelerator=2``): ranks 1
and 2 own "x", rank 3 owns "y". Root prints RESULT lines; the test asserts on them.
"""

import os
import sys
import tempfile

from mpi4py import MPI

sys.path.insert(0, os.path.dirname(__file__))
from _report import report  # noqa: E402

from rankpool import CommExecutor, ResourceSpecError  # noqa: E402

VAR = "RP_MPI_DEVICE"


def seen(comm=None):
    return [MPI.COMM_WORLD.Get_rank(), os.environ.get(VAR), os.environ.get("RP_STAGE"),
            os.environ.get("OMP_NUM_THREADS"), os.getcwd()]


def main():
    with CommExecutor(MPI.COMM_WORLD, accelerators=["x", "y"], accelerator_env=VAR,
                      ranks_per_accelerator=2) as ex:
        if ex is None:
            return
        report("root_device", os.environ.get(VAR))
        gpu3 = ex.requirements(num_ranks=3, gpus_per_rank=1, results="all")
        report("devices", [s[:2] for s in gpu3.submit(seen).result(timeout=60)])
        try:
            ex.requirements(num_ranks=4, gpus_per_rank=1).submit(seen)
        except ResourceSpecError as exc:
            report("too_wide", exc.key)
        with tempfile.TemporaryDirectory() as tmp:
            where = os.path.join(tmp, "made")
            spec = ex.requirements(num_ranks=2, results="all", threads_per_rank=3,
                                   env={"RP_STAGE": "during"}, cwd=where)
            report("during", [s[2:] for s in spec.submit(seen).result(timeout=60)] == [
                ["during", "3", where]] * 2)
            after = ex.requirements(num_ranks=3, results="all").submit(seen).result(timeout=60)
            report("after", all(s[2] is None and s[3] is None and s[4] != where for s in after))


if __name__ == "__main__":
    main()
