"""What one build's child process measures for ``builds.py``, in each of its modes.

``builds.py`` starts ``python builds.py --child`` once per build and round with this folder and
the build's source on ``PYTHONPATH``, ahead of any installed rankpool (the pool's ranks inherit
it, and import the task functions below by reference); :func:`child` runs the mode asked for
and returns its figures.
"""

from __future__ import annotations

import os
import statistics
import sys
from typing import Any

from suite_tasks import echo, noop


def throughput(ex: Any, n: int) -> float:
    import time
    t0 = time.perf_counter()
    futures = [ex.submit(noop) for _ in range(n)]
    for f in futures:
        f.result(timeout=300)
    return n / (time.perf_counter() - t0)


def round_trip_ms(ex: Any, n: int = 300, fn: Any = noop, *args: Any) -> float:
    import time
    trips = []
    for _ in range(n):
        t0 = time.perf_counter()
        ex.submit(fn, *args).result(timeout=60)
        trips.append(time.perf_counter() - t0)
    return statistics.median(trips) * 1e3


def barrier(comm: Any = None) -> int:
    if comm is not None:
        comm.Barrier()
        return int(comm.Get_size())
    return 1


def wide_round_trips(kwargs: dict[str, Any]) -> dict[str, float]:
    """Median round trips of a ``Barrier`` task on 1, 2 and 4 ranks of a 4-rank pool."""
    from rankpool import Executor
    out = {}
    with Executor(max_ranks=4, **kwargs) as ex:
        for k in (1, 2, 4):
            view = ex.requirements(num_ranks=k)
            assert view.submit(barrier).result(timeout=60) == k
            out[f"rtt{k}_ms"] = round_trip_ms(view, 200, barrier)
    return out


#: (label, bytes, round trips) of the ``--arrays`` echo tasks
ARRAYS = (("1MB", 1 << 20, 100), ("64MB", 64 << 20, 20))


def array_round_trips(kwargs: dict[str, Any]) -> dict[str, float]:
    """Median round trips of ``echo(a) -> a`` with float64 arrays (after a checked warm-up),
    and the GB/s they give (bytes one way over the round trip)."""
    import numpy as np

    from rankpool import Executor
    out = {}
    with Executor(max_ranks=2, **kwargs) as ex:
        for label, size, count in ARRAYS:
            a = np.arange(size // 8, dtype=np.float64)
            if not np.array_equal(ex.submit(echo, a).result(timeout=120), a):
                raise RuntimeError(f"the {label} echo came back changed")
            ms = round_trip_ms(ex, count, echo, a)
            out[f"np_{label}_ms"] = ms
            out[f"np_{label}_GBps"] = size / (ms / 1e3) / 1e9
    return out


def nap_ranks(duration: float, comm: Any = None) -> tuple[int, float, float, float]:
    """A mixed-workload task that says, for its rank: the pool rank, when it started, when its
    sleep ended, and when it left the closing ``Barrier``."""
    import time

    from mpi4py import MPI
    start = time.time()
    time.sleep(duration)
    slept = time.time()
    if comm is not None and comm.Get_size() > 1:
        comm.Barrier()
    return MPI.COMM_WORLD.Get_rank(), start, slept, time.time()


def mixed_losses(work: list[tuple[int, float]], spans: list[Any], t0: float, makespan: float,
                 ranks: int) -> dict[str, float]:
    """Where the rank-seconds of a mixed run went that its tasks' nominal sleeps did not take.

    ``spans``: per task, :func:`nap_ranks`'s tuple (1 rank) or a list of them. Every lost
    rank-second is in one field: ``overshoot`` (a sleep longer than asked), ``barrier`` (a
    rank waiting in the closing ``Barrier`` for the task's other ranks), ``before_k`` (a rank
    idle before a ``k``-rank task), ``start`` and ``end`` (idle before a rank's first task and
    after its last), ``unused`` (ranks that ran nothing); they add up to ``lost``."""
    from collections import defaultdict
    per_rank: dict[int, list[tuple[float, float, int]]] = defaultdict(list)
    out = {"overshoot": 0.0, "barrier": 0.0, "start": 0.0, "end": 0.0,
           "before_1": 0.0, "before_2": 0.0, "before_4": 0.0}
    for (k, d), span in zip(work, spans):
        for rank, start, slept, end in (span if isinstance(span, list) else [span]):
            per_rank[rank].append((start, end, k))
            out["overshoot"] += slept - start - d
            out["barrier"] += end - slept
    for runs in per_rank.values():
        runs.sort()
        out["start"] += runs[0][0] - t0
        out["end"] += t0 + makespan - runs[-1][1]
        for (_, end, _), (start, _, k) in zip(runs, runs[1:]):
            out[f"before_{k}"] = out.get(f"before_{k}", 0.0) + start - end
    out["unused"] = makespan * (ranks - len(per_rank))
    out["lost"] = ranks * makespan - sum(k * d for k, d in work)
    out["utilisation"] = 1 - out["lost"] / (ranks * makespan)
    return out


#: ``--flood``: tasks submitted at once, each with an argument of FLOOD_BYTES; and buffers
#: held in flight while the arena's placement and release are timed
FLOOD_TASKS, FLOOD_BYTES, IN_FLIGHT = 2000, 1 << 20, 1000


def arena_place_release_us() -> float:
    """µs to place a FLOOD_BYTES buffer in a front-end arena and release it, with IN_FLIGHT
    other buffers in flight (median of 5 passes of 200)."""
    import time

    import numpy as np

    from rankpool.shm import arena as shm
    from rankpool.shm import run as shm_run
    arena = shm.Arena(shm_run.new_run_prefix())
    buf = np.ones(FLOOD_BYTES, np.uint8)
    try:
        for _ in range(IN_FLIGHT):
            arena.publish([buf], reader_frees=False)
        passes = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(200):
                arena.release(arena.publish([buf], reader_frees=False)[1])
            passes.append((time.perf_counter() - t0) / 200 * 1e6)
        return statistics.median(passes)
    finally:
        arena.close()


def array_flood(kwargs: dict[str, Any]) -> dict[str, Any]:
    """FLOOD_TASKS ``echo`` tasks with a FLOOD_BYTES argument each, submitted at once and their
    futures kept until all are done (results held, as a caller collecting them holds them):
    tasks/s and each process's CPU per task; then :func:`arena_place_release_us`."""
    import time

    import numpy as np
    from cpu_split import cpu_per_task

    from rankpool import Executor
    a = np.ones(FLOOD_BYTES // 8)
    took = []

    def flood(n: int) -> None:
        t0 = time.perf_counter()
        futures = [ex.submit(echo, a) for _ in range(n)]
        for f in futures:
            f.result(timeout=600)
        took.append(time.perf_counter() - t0)

    with Executor(max_ranks=2, **kwargs) as ex:
        flood(50)  # warm-up
        cpu = cpu_per_task(ex, flood, FLOOD_TASKS)
    return {"tasks_per_s": FLOOD_TASKS / took[-1], "cpu_us": cpu,
            "place_release_us": arena_place_release_us()}


#: argument sizes, bytes, of the ``--args`` floods
ARG_SIZES = (20, 120, 500, 2000)


def argument_floods(tasks: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    """For each of ARG_SIZES: ``tasks`` ``echo`` tasks with a byte string of that size as
    their argument, submitted at once (median tasks/s of 3 floods), and rank 0's CPU µs per
    task during one more."""
    from cpu_split import cpu_per_task

    from rankpool import Executor
    out: dict[str, Any] = {}
    with Executor(max_ranks=2, **kwargs) as ex:
        for size in ARG_SIZES:
            arg = b"x" * size

            def flood(n: int, arg: bytes = arg) -> float:
                import time
                t0 = time.perf_counter()
                for f in [ex.submit(echo, arg) for _ in range(n)]:
                    f.result(timeout=600)
                return n / (time.perf_counter() - t0)

            flood(min(tasks, 2000))  # warm-up
            rate = statistics.median(flood(tasks) for _ in range(3))
            out[str(size)] = {"tasks_per_s": rate,
                              "rank0_us": cpu_per_task(ex, flood, tasks)["pool rank 0"]}
    return out


#: runs of the mixed workload per build and round with ``--mixed``
MIXED_RUNS = 3


def mixed_gaps(kwargs: dict[str, Any]) -> dict[str, float]:
    """The mixed workload of ``run_all`` (120 tasks of 1, 2 or 4 ranks, seed 7) on a 4-rank
    pool, :data:`MIXED_RUNS` times after a warm-up: :func:`mixed_losses`, medians."""
    import time

    from suite_tasks import mixed_workload

    from rankpool import Executor
    work = mixed_workload(120)
    runs = []
    with Executor(max_ranks=4, **kwargs) as ex:
        views = {k: ex.requirements(num_ranks=k, results="all") for k in (1, 2, 4)}
        for k in views:
            views[k].submit(nap_ranks, 0.001).result(timeout=60)
        for _ in range(MIXED_RUNS):
            t0 = time.time()
            futures = [views[k].submit(nap_ranks, d) for k, d in work]
            spans = [f.result(timeout=120) for f in futures]
            runs.append(mixed_losses(work, spans, t0, time.time() - t0, 4))
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


#: how many 4-rank applications ``--apps`` runs each way per round
APP_TRIPS = 10


def app_round_trips(kwargs: dict[str, Any]) -> dict[str, float]:
    """A 4-rank C ``run_mpi`` task on a pool of 8 worker ranks against a bare ``mpiexec -n 4``
    of the same program from here, interleaved (medians); and the wake-ups a second of all the
    pool's ranks together (voluntary context switches) while a 4-rank application runs."""
    import subprocess
    import time

    from cpu_split import executor_processes

    from rankpool import Executor, run_mpi
    program = os.environ["RANKPOOL_BENCH_APP"]
    line = [os.path.join(os.path.dirname(sys.executable), "mpiexec"), "-n", "4", program]
    floor, task = [], []
    with Executor(max_ranks=8, **kwargs) as ex:
        view = ex.requirements(num_ranks=4)
        view.submit(run_mpi, [program]).result(timeout=120)
        for _ in range(APP_TRIPS):
            t0 = time.perf_counter()
            subprocess.run(line, check=True, capture_output=True, timeout=120)
            floor.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            view.submit(run_mpi, [program]).result(timeout=120)
            task.append(time.perf_counter() - t0)
        ranks = [p for name, p in executor_processes(ex).items() if name.startswith("pool rank")]
        future = view.submit(run_mpi, ["sleep", "2.5"])
        time.sleep(0.5)
        before, t0 = [p.num_ctx_switches().voluntary for p in ranks], time.monotonic()
        time.sleep(1.5)
        wakes = sum(p.num_ctx_switches().voluntary - b for p, b in zip(ranks, before))
        wall = time.monotonic() - t0
        future.result(timeout=60)
    return {"floor_ms": 1e3 * statistics.median(floor), "task_ms": 1e3 * statistics.median(task),
            "wakes_per_s": wakes / wall}


def child(tasks: int, kwargs: dict[str, Any]) -> dict[str, float]:
    if kwargs.pop("wide", False):
        return wide_round_trips(kwargs)
    if kwargs.pop("apps", False):
        return app_round_trips(kwargs)
    if kwargs.pop("arrays", False):
        return array_round_trips(kwargs)
    if kwargs.pop("mixed", False):
        return mixed_gaps(kwargs)
    if kwargs.pop("flood", False):
        return array_flood(kwargs)
    if kwargs.pop("args", False):
        return argument_floods(tasks, kwargs)
    if kwargs.pop("anchor", False):
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(2) as ex:
            round_trip_ms(ex, 50)
            return {"round_trip_ms": round_trip_ms(ex)}
    from rankpool import Executor
    with Executor(max_ranks=2, **kwargs) as ex:
        throughput(ex, min(tasks, 2000))  # warm-up
        rate = statistics.median(throughput(ex, tasks) for _ in range(3))
        from cpu_split import cpu_per_task
        cpu = cpu_per_task(ex, lambda n: throughput(ex, n), tasks)
        return {"noop_tasks_per_s": rate, "round_trip_ms": round_trip_ms(ex), "cpu_us": cpu}
