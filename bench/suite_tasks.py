"""The systems compared by ``run_all.py``, and the task functions every system runs.

Task functions live in this module so that workers of every system unpickle them by
reference (``run_all.py`` puts ``bench/`` on their ``PYTHONPATH``).
"""

from __future__ import annotations

import random
import time
from typing import Any

WORKERS = 2
MPI_WORKERS = 4
MB = 1 << 20

#: display order; the tables and plots follow it
SYSTEMS = ["rankpool.Executor", "rankpool.CommExecutor", "ExtremeScaleExecutor (DFK)",
           "Parsl HTEX direct", "Parsl HTEX direct (tuned)", "Parsl HTEX (DFK)",
           "Parsl MPIExecutor (DFK)", "mpi4py.futures", "executorlib", "ProcessPoolExecutor"]
OURS = ("rankpool.Executor", "rankpool.CommExecutor", "ExtremeScaleExecutor (DFK)")


def noop() -> None:
    return None


def echo(a: Any) -> Any:
    return a


def barrier(comm: Any = None) -> int:
    comm.Barrier()
    return comm.Get_size()  # type: ignore[no-any-return]


def nap(duration: float, comm: Any = None) -> tuple[float, float]:
    """A mixed-workload task: every rank sleeps, then they meet; the wall-clock span."""
    start = time.time()
    time.sleep(duration)
    if comm is not None and comm.Get_size() > 1:
        comm.Barrier()
    return start, time.time()


def world_barrier() -> int:
    """executorlib's multi-rank tasks run as their own MPI job: COMM_WORLD is the task's."""
    from mpi4py import MPI
    MPI.COMM_WORLD.Barrier()
    return MPI.COMM_WORLD.Get_size()  # type: ignore[no-any-return]


def world_nap(duration: float) -> tuple[float, float]:
    from mpi4py import MPI
    start = time.time()
    time.sleep(duration)
    MPI.COMM_WORLD.Barrier()
    return start, time.time()


def mixed_workload(n: int, seed: int = 7) -> list[tuple[int, float]]:
    """``n`` tasks as (ranks, seconds): widths 1, 2 or 4, sleeps of 5-50 ms."""
    rng = random.Random(seed)
    return [(rng.choice((1, 2, 4)), rng.uniform(0.005, 0.050)) for _ in range(n)]


# =============================================================================================
# the measurements, over a uniform interface
