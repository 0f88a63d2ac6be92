"""CommExecutor against mpi4py.futures.MPICommExecutor, side by side in one MPI job.

    mpiexec -n 5 python bench/comm_executor.py [--tasks 10000] [--repeat 3] [--json OUT]

Both executors run on the same ranks in the same job, one after the other, so the ratio
between them is meaningful even on a busy machine; absolute figures are not.
Measures: no-op throughput (all tasks submitted, then all awaited), one task's round trip
(median of sequential submit+result), 2- and 4-rank round trips of a function doing a
``Barrier`` (CommExecutor only: mpi4py.futures has no multi-rank tasks), and the CPU an idle
pool uses.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from mpi4py import MPI
from mpi4py.futures import MPICommExecutor

from rankpool import CommExecutor


def noop() -> None:
    return None


def barrier(comm=None) -> None:  # type: ignore[no-untyped-def]
    comm.Barrier()


def throughput(ex, n: int) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    futures = [ex.submit(noop) for _ in range(n)]
    for f in futures:
        f.result()
    return n / (time.perf_counter() - t)


def round_trip(ex, fn, count: int = 300) -> float:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(count):
        t = time.perf_counter()
        ex.submit(fn).result()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e3


def idle_cpu(pids: list[int], seconds: float = 3.0) -> float:
    import psutil
    procs = [psutil.Process(p) for p in pids]
    time.sleep(1.0)
    before = [p.cpu_times() for p in procs]
    t = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t
    after = [p.cpu_times() for p in procs]
    return sum((a.user + a.system) - (b.user + b.system) for a, b in zip(after, before)) / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    world = MPI.COMM_WORLD
    pids = world.allgather(os.getpid())
    out: dict[str, float] = {}
    with CommExecutor(world, root=0) as ex:
        if ex is not None:
            throughput(ex, 1000)  # warm-up
            out["rankpool_tasks_per_s"] = statistics.median(
                throughput(ex, args.tasks) for _ in range(args.repeat))
            out["rankpool_rtt_ms"] = round_trip(ex, noop)
            for width in (2, 4):
                if width < world.Get_size():
                    out[f"rankpool_{width}rank_rtt_ms"] = round_trip(
                        ex.requirements(num_ranks=width), barrier)
            out["rankpool_idle_cores"] = idle_cpu(pids)
    with MPICommExecutor(world, root=0) as ex:
        if ex is not None:
            throughput(ex, 1000)
            out["mpi4py_tasks_per_s"] = statistics.median(
                throughput(ex, args.tasks) for _ in range(args.repeat))
            out["mpi4py_rtt_ms"] = round_trip(ex, noop)
    if world.Get_rank() == 0:
        out["throughput_ratio"] = out["rankpool_tasks_per_s"] / out["mpi4py_tasks_per_s"]
        out["ranks"] = world.Get_size()
        for key, value in out.items():
            print(f"{key:28s} {value:12.3f}")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
