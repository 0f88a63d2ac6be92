"""rankpool.Executor against Parsl HTEX (direct), mpi4py.futures and ProcessPoolExecutor.

HTEX runs twice, both unencrypted (its fastest): with its other defaults, and tuned as its
experts would run many small tasks (``prefetch_capacity=256``: ``HTEX_TUNED``).

    python bench/executor.py [--workers 2] [--tasks 10000] [--repeat 3] [--json OUT]

Every system gets the same number of worker ranks or processes and runs in this one process,
one after the other, so the ratios are meaningful on a busy machine; absolute figures are not.
Measures no-op throughput (all tasks submitted, then all awaited), one task's round trip
(median of sequential submit + result) and start to first result.

Each system is a context manager yielding ``submit(fn, *args) -> future``, so that
``bench/run_all.py`` can run other workloads on the same systems.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

#: ``submit(fn, *args)`` of one system, returning a ``concurrent.futures.Future``-like object
Submit = Callable[..., Any]


def noop() -> None:
    return None


def throughput(submit: Callable[[], Any], n: int) -> float:
    t = time.perf_counter()
    futures = [submit() for _ in range(n)]
    for f in futures:
        f.result()
    return n / (time.perf_counter() - t)


def round_trip(submit: Callable[[], Any], count: int = 300) -> float:
    samples = []
    for _ in range(count):
        t = time.perf_counter()
        submit().result()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e3


@contextmanager
def rankpool_executor(workers: int) -> Iterator[Submit]:
    from rankpool import Executor
    with Executor(max_ranks=workers, run_dir=tempfile.mkdtemp(prefix="bench-rankpool-")) as ex:
        yield ex.submit


@contextmanager
def htex_direct(workers: int, **options: Any) -> Iterator[Submit]:
    """HTEX with its defaults but ``encrypted=False`` (Parsl encrypts by default; 64 MB then
    takes ~10 s), or with ``options``."""
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider
    options.setdefault("encrypted", False)
    htex = HighThroughputExecutor(label="htex", max_workers_per_node=workers,
                                  provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
                                  **options)
    htex.run_dir = tempfile.mkdtemp(prefix="bench-htex-")
    htex.run_id = "bench"
    htex.provider.script_dir = htex.run_dir
    htex.start()
    htex.scale_out_facade(1)
    try:
        yield lambda fn, *args: htex.submit(fn, {}, *args)
    finally:
        _end_blocks(htex)
        htex.shutdown()


def _end_blocks(htex: Any) -> None:
    """End HTEX's blocks, as Parsl's DataFlowKernel does at its cleanup, and wait until their
    processes are gone. ``shutdown`` alone leaves the workers to their heartbeat threshold
    (120 s), polling all the while: on 2 cores they slowed whatever was measured next."""
    import psutil
    job_ids = list(htex.blocks_to_job_id.values())
    procs: list[psutil.Process] = []
    for job_id in job_ids:
        try:
            top = psutil.Process(htex.provider.resources[job_id]["remote_pid"])
            procs += [top, *top.children(recursive=True)]
        except (KeyError, psutil.Error):
            continue
    if job_ids:
        htex.scale_in(len(job_ids))
    _, alive = psutil.wait_procs(procs, timeout=10)
    for proc in alive:
        proc.kill()
    psutil.wait_procs(alive, timeout=5)


#: HTEX as its experts run many small tasks: a deep prefetch (and, like the untuned row,
#: unencrypted: its fastest configuration, so rankpool's secured default is held to the
#: stricter comparison)
HTEX_TUNED = {"prefetch_capacity": 256}
htex_tuned = functools.partial(htex_direct, **HTEX_TUNED)


@contextmanager
def mpi4py_futures(workers: int) -> Iterator[Submit]:
    from mpi4py.futures import MPIPoolExecutor
    with MPIPoolExecutor(max_workers=workers) as ex:
        yield ex.submit


@contextmanager
def process_pool(workers: int) -> Iterator[Submit]:
    with concurrent.futures.ProcessPoolExecutor(workers) as ex:
        yield ex.submit


SYSTEMS = {"rankpool.Executor": rankpool_executor, "Parsl HTEX direct": htex_direct,
           "Parsl HTEX direct (tuned)": htex_tuned, "mpi4py.futures": mpi4py_futures,
           "ProcessPoolExecutor": process_pool}


def measure(name: str, factory: Any, workers: int, tasks: int, repeat: int) -> dict[str, float]:
    t = time.perf_counter()
    with factory(workers) as submit_any:
        submit = functools.partial(submit_any, noop)
        submit().result()
        first = time.perf_counter() - t
        throughput(submit, min(1000, tasks))  # warm-up
        rate = statistics.median(throughput(submit, tasks) for _ in range(repeat))
        rtt = round_trip(submit)
    print(f"  {name}: {rate:,.0f} tasks/s, round trip {rtt:.3f} ms, first result {first:.2f} s",
          file=sys.stderr, flush=True)
    return {"tasks_per_s": rate, "rtt_ms": rtt, "first_result_s": first}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=list(SYSTEMS), help="a subset of systems")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results = {}
    for name, factory in SYSTEMS.items():
        if args.only and name not in args.only:
            continue
        results[name] = measure(name, factory, args.workers, args.tasks, args.repeat)
    ours = results.get("rankpool.Executor")
    print(f"| system ({args.workers} workers) | tasks/s | round trip ms | first result s | "
          "rankpool throughput ratio |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        ratio = ours["tasks_per_s"] / r["tasks_per_s"] if ours else float("nan")
        print(f"| {name} | {r['tasks_per_s']:,.0f} | {r['rtt_ms']:.3f} | {r['first_result_s']:.2f} "
              f"| {ratio:.1f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"workers": args.workers, "tasks": args.tasks, "results": results}, fh,
                      indent=1)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    # Parsl's scripts (interchange.py, process_worker_pool.py) live beside the interpreter
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    sys.exit(main())
