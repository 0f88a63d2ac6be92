"""Two or more rankpool builds side by side: ``rankpool.Executor``'s no-op throughput and one
task's round trip, each build in a child process of its own, the builds interleaved round by
round so that a busy spell of the machine falls on all of them; ``ProcessPoolExecutor``'s round
trip is measured in every round as the anchor the ratios are given against. Also the CPU time
each process of the path (front-end, interchange, every rank, the keepers) spends per no-op
task during one more throughput run.

    python bench/builds.py --build before=/path/to/old/src --build after=src \\
        [--build plain=src:encrypted=False] [--rounds 3] [--tasks 10000] [--json out.json]
    python bench/builds.py --wide --build ...      # 1-, 2- and 4-rank Barrier round trips
    python bench/builds.py --apps --build ...      # a 4-rank C run_mpi task against the floor
    python bench/builds.py --arrays --build ...    # 1 MB and 64 MB NumPy echo round trips
    python bench/builds.py --mixed --build ...     # where the mixed workload's rank time goes
    python bench/builds.py --flood --build ...     # 2,000 tasks with a 1 MB argument at once

A build is ``LABEL=SRC`` with optional ``:KEY=VALUE,...`` keyword arguments for ``Executor``
(values are Python literals). The tables give every round, then the medians and the ratios.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def noop() -> None:
    return None


def _throughput(ex: Any, n: int) -> float:
    import time
    t0 = time.perf_counter()
    futures = [ex.submit(noop) for _ in range(n)]
    for f in futures:
        f.result(timeout=300)
    return n / (time.perf_counter() - t0)


def _round_trip_ms(ex: Any, n: int = 300, fn: Any = noop, *args: Any) -> float:
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
            out[f"rtt{k}_ms"] = _round_trip_ms(view, 200, barrier)
    return out


def echo(a: Any) -> Any:
    return a


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
            ms = _round_trip_ms(ex, count, echo, a)
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
    if kwargs.pop("anchor", False):
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(2) as ex:
            _round_trip_ms(ex, 50)
            return {"round_trip_ms": _round_trip_ms(ex)}
    from rankpool import Executor
    with Executor(max_ranks=2, **kwargs) as ex:
        _throughput(ex, min(tasks, 2000))  # warm-up
        rate = statistics.median(_throughput(ex, tasks) for _ in range(3))
        from cpu_split import cpu_per_task
        cpu = cpu_per_task(ex, lambda n: _throughput(ex, n), tasks)
        return {"noop_tasks_per_s": rate, "round_trip_ms": _round_trip_ms(ex), "cpu_us": cpu}


def parse_build(text: str) -> tuple[str, Path, dict[str, Any]]:
    label, _, rest = text.partition("=")
    src, _, opts = rest.partition(":")
    if not label or not src:
        raise argparse.ArgumentTypeError(f"a build is LABEL=SRC[:KEY=VALUE,...], not {text!r}")
    kwargs = {}
    for item in filter(None, opts.split(",")):
        key, _, value = item.partition("=")
        kwargs[key] = ast.literal_eval(value)
    return label, Path(src).resolve(), kwargs


def run(src: Path | None, kwargs: dict[str, Any], tasks: int) -> dict[str, Any]:
    paths = [str(HERE)] + ([str(src)] if src else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    proc = subprocess.run([sys.executable, __file__, "--child", str(tasks), json.dumps(kwargs)],
                          env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", type=parse_build, action="append", default=[])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tasks", type=int, default=10000, help="no-op tasks per throughput run")
    p.add_argument("--wide", action="store_true",
                   help="round trips of 1-, 2- and 4-rank Barrier tasks instead")
    p.add_argument("--apps", action="store_true",
                   help="a 4-rank C run_mpi task against a bare mpiexec instead")
    p.add_argument("--arrays", action="store_true",
                   help="1 MB and 64 MB NumPy echo round trips instead")
    p.add_argument("--mixed", action="store_true",
                   help="where the mixed workload's rank-seconds go instead")
    p.add_argument("--flood", action="store_true",
                   help="2,000 tasks with a 1 MB argument each at once instead")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    q = p.parse_args(argv)
    if q.child:
        print(json.dumps(child(int(q.child[0]), json.loads(q.child[1]))))
        return 0
    if not q.build:
        p.error("name at least one --build")
    if q.wide:
        return report_wide(q)
    if q.apps:
        return report_apps(q)
    if q.arrays:
        return report_arrays(q)
    if q.mixed:
        return report_mixed(q)
    if q.flood:
        return report_flood(q)
    rows = run_rounds(q, {}, anchor=True)
    anchor = statistics.median(x["round_trip_ms"] for x in rows["ProcessPoolExecutor"])
    print("| build | tasks/s per round | median | round trip ms per round | median "
          "| ÷ ProcessPoolExecutor's round trip |")
    print("|---|---|---:|---|---:|---:|")
    for label, results in ok_rows(rows, 6):
        rates = [x.get("noop_tasks_per_s") for x in results]
        trips = [x["round_trip_ms"] for x in results]
        rate = statistics.median(rates) if rates[0] is not None else None
        trip = statistics.median(trips)
        print(f"| {label} | {', '.join(f'{x:,.0f}' for x in rates if x) or '-'} "
              f"| {f'{rate:,.0f}' if rate else '-'} | {', '.join(f'{x:.2f}' for x in trips)} "
              f"| {trip:.2f} | {trip / anchor:.2f} |")
    print("\nCPU per no-op task by process, µs (median of rounds):\n")
    names: list[str] = []
    for results in rows.values():
        for x in results:
            names += [k for k in x.get("cpu_us", {}) if k not in names]
    print("| build | " + " | ".join(names) + " | total |")
    print("|---|" + "---:|" * (len(names) + 1))
    for label, results in rows.items():
        cpus = [x["cpu_us"] for x in results if "cpu_us" in x]
        if not cpus:
            continue
        per = [statistics.median(c.get(k, 0.0) for c in cpus) for k in names]
        total = statistics.median(sum(c.values()) for c in cpus)
        print(f"| {label} | " + " | ".join(f"{v:.1f}" for v in per) + f" | {total:.1f} |")
    if q.json:
        q.json.write_text(json.dumps(rows, indent=1))
    return 0


def run_rounds(q: argparse.Namespace, extra: dict[str, Any],
               anchor: bool = False) -> dict[str, list[dict[str, Any]]]:
    """Every build once per round (``extra`` added to its keywords), and the anchor first."""
    rows: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in q.build}
    if anchor:
        rows["ProcessPoolExecutor"] = []
    for r in range(q.rounds):
        if anchor:
            rows["ProcessPoolExecutor"].append(run(None, {"anchor": True}, q.tasks))
        for label, src, kwargs in q.build:
            rows[label].append(run(src, {**kwargs, **extra}, q.tasks))
            print(f"round {r + 1} {label}: {rows[label][-1]}", file=sys.stderr)
    return rows


def ok_rows(rows: dict[str, list[dict[str, Any]]],
            columns: int) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """The builds whose every round ran; a row naming the error for the others."""
    for label, results in rows.items():
        failed = [x["error"] for x in results if "error" in x]
        if failed:
            print(f"| {label} | error: {failed[0]} |" + " |" * (columns - 1))
        else:
            yield label, results


def report_wide(q: argparse.Namespace) -> int:
    rows = run_rounds(q, {"wide": True})
    print("| build | 1-rank round trip ms | 2-rank | 4-rank |")
    print("|---|---:|---:|---:|")
    for label, results in ok_rows(rows, 4):
        cells = [statistics.median(x[f"rtt{k}_ms"] for x in results) for k in (1, 2, 4)]
        print(f"| {label} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    if q.json:
        q.json.write_text(json.dumps(rows, indent=1))
    return 0


def report_arrays(q: argparse.Namespace) -> int:
    rows = run_rounds(q, {"arrays": True})
    print("| build | " + " | ".join(f"{label} ms | {label} GB/s" for label, _, _ in ARRAYS) + " |")
    print("|---|" + "---:|---:|" * len(ARRAYS))
    for label, results in ok_rows(rows, 1 + 2 * len(ARRAYS)):
        cells = []
        for name, _, _ in ARRAYS:
            cells += [f"{statistics.median(x[f'np_{name}_ms'] for x in results):.2f}",
                      f"{statistics.median(x[f'np_{name}_GBps'] for x in results):.2f}"]
        print(f"| {label} | " + " | ".join(cells) + " |")
    if q.json:
        q.json.write_text(json.dumps(rows, indent=1))
    return 0


#: the columns of ``--mixed``'s table: (field of :func:`mixed_losses`, heading)
MIXED_COLUMNS = (("overshoot", "sleep overshoot"), ("barrier", "Barrier waits"),
                 ("before_1", "idle before 1-rank"), ("before_2", "before 2-rank"),
                 ("before_4", "before 4-rank"), ("start", "first start"), ("end", "after last"),
                 ("unused", "unused ranks"), ("lost", "lost"))


def report_mixed(q: argparse.Namespace) -> int:
    rows = run_rounds(q, {"mixed": True})
    print("| build | utilisation % | " + " | ".join(h for _, h in MIXED_COLUMNS) + " |")
    print("|---|---:|" + "---:|" * len(MIXED_COLUMNS))
    for label, results in ok_rows(rows, 2 + len(MIXED_COLUMNS)):
        util = statistics.median(x["utilisation"] for x in results)
        cells = [f"{statistics.median(x[key] for x in results):.3f}" for key, _ in MIXED_COLUMNS]
        print(f"| {label} | {100 * util:.1f} | " + " | ".join(cells) + " |")
    print("\n(rank-seconds, medians; 4 worker ranks; the lost ones add up to `lost`)")
    if q.json:
        q.json.write_text(json.dumps(rows, indent=1))
    return 0


def report_flood(q: argparse.Namespace) -> int:
    rows = run_rounds(q, {"flood": True})
    print("| build | tasks/s per round | median | front-end CPU µs/task | worker ranks CPU "
          "µs/task | arena place + release µs |")
    print("|---|---|---:|---:|---:|---:|")
    for label, results in ok_rows(rows, 6):
        rates = [x["tasks_per_s"] for x in results]
        front = statistics.median(x["cpu_us"]["front-end"] for x in results)
        ranks = statistics.median(sum(v for k, v in x["cpu_us"].items()
                                      if k.startswith("pool rank") and k != "pool rank 0")
                                  for x in results)
        place = statistics.median(x["place_release_us"] for x in results)
        print(f"| {label} | {', '.join(f'{r:,.0f}' for r in rates)} | "
              f"{statistics.median(rates):,.0f} | {front:,.0f} | {ranks:,.0f} | {place:,.0f} |")
    print(f"\n({FLOOD_TASKS:,} tasks of {FLOOD_BYTES >> 20} MiB; place + release with "
          f"{IN_FLIGHT:,} buffers in flight)")
    if q.json:
        q.json.write_text(json.dumps(rows, indent=1))
    return 0


def report_apps(q: argparse.Namespace) -> int:
    import tempfile
    with tempfile.TemporaryDirectory() as workdir:
        program = os.path.join(workdir, "world")
        source = HERE.parent / "tests" / "integration" / "mpi_programs" / "world.c"
        subprocess.run([os.path.join(os.path.dirname(sys.executable), "mpicc"), "-o", program,
                        str(source)], check=True, timeout=120)
        os.environ["RANKPOOL_BENCH_APP"] = program
        rows = run_rounds(q, {"apps": True})
    print("| build | bare mpiexec -n 4 ms | 4-rank run_mpi task ms | task ÷ floor "
          "| pool's wake-ups/s during an application |")
    print("|---|---:|---:|---:|---:|")
    for label, results in ok_rows(rows, 5):
        floor = statistics.median(x["floor_ms"] for x in results)
        task = statistics.median(x["task_ms"] for x in results)
        ratio = statistics.median(x["task_ms"] / x["floor_ms"] for x in results)
        wakes = statistics.median(x["wakes_per_s"] for x in results)
        print(f"| {label} | {floor:.0f} | {task:.0f} | {ratio:.2f} | {wakes:,.0f} |")
    if q.json:
        q.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
