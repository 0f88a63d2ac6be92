"""Inside one pool: the manager's dispatch rate to 63 worker ranks against 7, side by side.

    python bench/pool_dispatch.py [--ranks 8 64] [--tasks 20000] [--repeat 3] [--rounds 2]
                                  [--quick] [--json OUT]

Starts ``mpiexec -n N python bench/pool_dispatch.py --rank-job`` for each N of ``--ranks``,
one after the other, ``--rounds`` times interleaved (8, 64, 8, 64, ...), and collects the JSON
each job writes. In a job every rank builds a ``rankpool.CommExecutor`` over ``COMM_WORLD``;
rank 0 (the manager, plus the submitting thread) floods its N-1 workers with no-op tasks
(``bench/comm_executor.py``'s ``throughput``: all submitted, then all awaited) and times one
task's round trip. 64 ranks on this machine's 2 cores are heavily oversubscribed: the figure
says what the manager achieves when its workers compete with it for CPU, not what it does on
64 real cores. Rank 0's CPU per task (its process's CPU time over the tasks it dispatched)
separates the two: if it stays flat from 7 to 63 workers, dispatch is not O(workers) per task
and the lower rate is rank 0 waiting for a CPU. Compare the two within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


def rank_job(args: argparse.Namespace) -> int:
    """One mpiexec job: every rank serves; rank 0 measures and writes ``--json``."""
    import psutil
    from comm_executor import noop, round_trip, throughput  # bench/, beside this file
    from mpi4py import MPI

    from rankpool import CommExecutor

    world = MPI.COMM_WORLD
    started = time.perf_counter()
    with CommExecutor(world, root=0) as ex:
        if ex is not None:
            ex.submit(noop).result()
            first = time.perf_counter() - started
            throughput(ex, min(args.tasks, 2000))  # warm every worker
            me = psutil.Process()
            rates, cpu = [], []
            for _ in range(args.repeat):
                c0 = sum(me.cpu_times()[:2])
                t = time.perf_counter()
                rates.append(throughput(ex, args.tasks))
                cpu.append((sum(me.cpu_times()[:2]) - c0) / (time.perf_counter() - t))
            out = {"ranks": world.Get_size(), "workers": world.Get_size() - 1,
                   "tasks": args.tasks, "tasks_per_s": statistics.median(rates), "runs": rates,
                   "rank0_cores": statistics.median(cpu),
                   "rank0_us_per_task": statistics.median(c / r * 1e6 for c, r in zip(cpu, rates)),
                   "rtt_ms": round_trip(ex, noop, 200),
                   "first_result_s": first}
            with open(args.json, "w") as fh:
                json.dump(out, fh)
    return 0


def run_job(ranks: int, args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    from rankpool.launchers.mpiexec import find_mpiexec
    out = os.path.join(workdir, f"job-{ranks}-{time.monotonic_ns()}.json")
    cmd = [find_mpiexec(), "-n", str(ranks), sys.executable, os.path.abspath(__file__),
           "--rank-job", "--tasks", str(args.tasks), "--repeat", str(args.repeat), "--json", out]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0 or not os.path.exists(out):
        raise RuntimeError(f"mpiexec -n {ranks} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    with open(out) as fh:
        result: dict[str, Any] = json.load(fh)
    result["job_s"] = time.perf_counter() - t
    print(f"  mpiexec -n {ranks}: {result['tasks_per_s']:,.0f} tasks/s to {ranks - 1} workers, "
          f"round trip {result['rtt_ms']:.2f} ms, rank 0 used {result['rank0_cores']:.2f} cores, "
          f"{result['rank0_us_per_task']:.1f} us per task (job {result['job_s']:.1f} s)",
          file=sys.stderr, flush=True)
    return result


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every job, interleaved; medians per rank count and the ratio of the largest to the
    smallest."""
    jobs: dict[int, list[dict[str, Any]]] = {n: [] for n in args.ranks}
    with tempfile.TemporaryDirectory(prefix="rankpool-dispatch-") as workdir:
        for _ in range(args.rounds):
            for n in args.ranks:
                jobs[n].append(run_job(n, args, workdir))
    summary: dict[str, Any] = {"jobs": {str(n): js for n, js in jobs.items()}, "by_ranks": {}}
    for n, js in jobs.items():
        summary["by_ranks"][str(n)] = {
            "workers": n - 1, "tasks_per_s": statistics.median(j["tasks_per_s"] for j in js),
            "rtt_ms": statistics.median(j["rtt_ms"] for j in js),
            "rank0_cores": statistics.median(j["rank0_cores"] for j in js),
            "rank0_us_per_task": statistics.median(j["rank0_us_per_task"] for j in js)}
    lo, hi = min(args.ranks), max(args.ranks)
    summary["ratio"] = (summary["by_ranks"][str(hi)]["tasks_per_s"]
                        / summary["by_ranks"][str(lo)]["tasks_per_s"])
    summary["ratio_label"] = f"{hi - 1} workers / {lo - 1} workers"
    return summary


def table(summary: dict[str, Any]) -> str:
    lines = ["| pool (mpiexec -n) | worker ranks | no-op tasks/s | round trip ms | rank 0 cores "
             "| rank 0 CPU µs/task |", "|---:|---:|---:|---:|---:|---:|"]
    for n, r in summary["by_ranks"].items():
        lines.append(f"| {n} | {r['workers']} | {r['tasks_per_s']:,.0f} | {r['rtt_ms']:.2f} | "
                     f"{r['rank0_cores']:.2f} | {r['rank0_us_per_task']:.1f} |")
    lines.append(f"\nratio {summary['ratio_label']}: {summary['ratio']:.2f}")
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[8, 64], help="pool sizes (mpiexec -n)")
    p.add_argument("--tasks", type=int, default=20_000, help="no-op tasks per throughput run")
    p.add_argument("--repeat", type=int, default=3, help="throughput runs per job")
    p.add_argument("--rounds", type=int, default=2, help="jobs per pool size, interleaved")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per mpiexec job")
    p.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    p.add_argument("--json", help="write the figures here (with --rank-job: rank 0's figures)")
    p.add_argument("--rank-job", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.tasks, args.repeat, args.rounds = min(args.tasks, 2000), 1, 1
    if any(n < 2 for n in args.ranks):
        p.error("--ranks: every pool needs at least 2 ranks (a manager and a worker)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.rank_job:
        return rank_job(args)
    summary = measure(args)
    print(table(summary))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
