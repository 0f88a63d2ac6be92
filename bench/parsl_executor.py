"""ExtremeScaleExecutor against Parsl's own executors, through the DataFlowKernel, in one run.

    python bench/parsl_executor.py [--tasks 2000] [--latency 100] [--mpi-tasks 40] [--repeat 3]
                                   [--only xs threads ...] [--json OUT]

Every executor gets 2 worker ranks or processes, and runs the same apps through a fresh
``parsl.load`` (Parsl's logging on, then off):

* ``parsl.load`` to the first result of a no-op app (the executor's start-up as a user sees it);
* no-op throughput: ``--tasks`` apps submitted at once, then all awaited;
* no-op latency: the median of ``--latency`` apps run one after another;
* 2- and 4-rank tasks doing an MPI ``Barrier`` (median of ``--mpi-tasks``):
  ExtremeScaleExecutor (4 worker ranks, one pool) against Parsl's MPIExecutor, which runs
  ``mpiexec`` for every task (a bash app with ``$PARSL_MPI_PREFIX``; a one-line
  ``PBS_NODEFILE`` naming this host stands in for a batch job's node list).

ThreadPoolExecutor is the DataFlowKernel's own ceiling: no executor can beat it through the
DFK. Every case runs in a fresh interpreter (so that one case's logging set-up cannot slow
the next), ``--repeat`` times, interleaved with the others; the table shows medians.
Absolute figures are noisy on a shared machine; compare within one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import parsl
from parsl.executors import HighThroughputExecutor, MPIExecutor, ThreadPoolExecutor
from parsl.launchers import SimpleLauncher
from parsl.providers import LocalProvider

from rankpool import ExtremeScaleExecutor
from rankpool.frontends.parsl.executor import local_provider


@parsl.python_app
def noop() -> None:
    return None


@parsl.python_app
def barrier(comm: Any = None, parsl_resource_specification: dict = {}) -> int:  # noqa: B006
    comm.Barrier()
    return comm.Get_size()  # type: ignore[no-any-return]


@parsl.bash_app
def mpi_barrier(parsl_resource_specification: dict = {}) -> str:  # noqa: B006
    import shlex  # HTEX pickles this function by value, without its module's globals
    import sys
    code = "from mpi4py import MPI; MPI.COMM_WORLD.Barrier()"
    return f"$PARSL_MPI_PREFIX {shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def make_executor(kind: str, workdir: str) -> Any:
    """One executor of 2 workers (4 worker ranks for the MPI runs)."""
    if kind == "xs":
        return ExtremeScaleExecutor(label="xs", provider=local_provider(), ranks_per_node=2)
    if kind == "xs-mpi":
        return ExtremeScaleExecutor(label="xs", provider=local_provider(), ranks_per_node=4)
    if kind == "htex":
        return HighThroughputExecutor(label="htex", max_workers_per_node=2, encrypted=False,
                                      provider=LocalProvider(init_blocks=1, max_blocks=1))
    if kind == "threads":
        return ThreadPoolExecutor(label="threads", max_threads=2)
    if kind == "mpiexecutor":
        nodefile = os.path.join(workdir, "nodefile")
        with open(nodefile, "w") as f:
            f.write(socket.gethostname() + "\n")
        init = (f"export PBS_NODEFILE={shlex.quote(nodefile)}; "
                f"export PATH={shlex.quote(os.path.dirname(sys.executable))}:$PATH")
        return MPIExecutor(label="mpi", max_workers_per_block=1, mpi_launcher="mpiexec",
                           provider=LocalProvider(launcher=SimpleLauncher(), worker_init=init,
                                                  init_blocks=1, max_blocks=1))
    raise ValueError(kind)


def run_case(kind: str, logging_on: bool, args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    """Load one configuration, measure, clean up."""
    run_dir = os.path.join(workdir, f"{kind}-{'log' if logging_on else 'nolog'}")
    config = parsl.Config(executors=[make_executor(kind, workdir)], run_dir=run_dir,
                          initialize_logging=logging_on)
    out: dict[str, Any] = {"executor": kind, "logging": logging_on}
    t0 = time.perf_counter()
    dfk = parsl.load(config)
    try:
        if kind in ("xs-mpi", "mpiexecutor"):
            for ranks in (2, 4):
                out[f"barrier{ranks}_ms"] = mpi_latency(kind, ranks, args.mpi_tasks) * 1e3
            return out
        noop().result()
        out["first_result_s"] = time.perf_counter() - t0
        [f.result() for f in [noop() for _ in range(50)]]  # warm every worker
        t = time.perf_counter()
        futures = [noop() for _ in range(args.tasks)]
        for f in futures:
            f.result()
        out["throughput"] = args.tasks / (time.perf_counter() - t)
        out["latency_ms"] = median_of(lambda: noop().result(), args.latency) * 1e3
        return out
    finally:
        dfk.cleanup()


def mpi_latency(kind: str, ranks: int, n: int) -> float:
    spec = {"num_ranks": ranks}
    if kind == "mpiexecutor":
        spec.update(num_nodes=1, ranks_per_node=ranks)
        app: Callable[..., Any] = mpi_barrier
    else:
        app = barrier
    app(parsl_resource_specification=spec).result()  # warm up
    return median_of(lambda: app(parsl_resource_specification=spec).result(), n)


def median_of(fn: Callable[[], Any], n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def report(rows: list[dict[str, Any]]) -> str:
    """The table of medians over repeats, with ratios."""
    def med(kind: str, logging_on: bool, key: str) -> float | None:
        values = [r[key] for r in rows if r["executor"] == kind and r["logging"] == logging_on
                  and key in r]
        return statistics.median(values) if values else None

    lines = ["through the DataFlowKernel, 2 workers each (medians of the repeats)",
             f"{'executor':<10} {'logging':<8} {'load->1st s':>11} {'tasks/s':>9} "
             f"{'latency ms':>10} {'tasks/s vs threads':>19}"]
    for logging_on in (True, False):
        ref = med("threads", logging_on, "throughput")
        for kind in ("xs", "htex", "threads"):
            rate = med(kind, logging_on, "throughput")
            if rate is None:
                continue
            ratio = f"{rate / ref:.2f}x" if ref else "-"
            lines.append(f"{kind:<10} {'on' if logging_on else 'off':<8} "
                         f"{med(kind, logging_on, 'first_result_s') or float('nan'):>11.2f} "
                         f"{rate:>9.0f} "
                         f"{med(kind, logging_on, 'latency_ms') or float('nan'):>10.2f} "
                         f"{ratio:>19}")
    if any("barrier2_ms" in r for r in rows):
        lines += ["", "Barrier tasks, median latency in ms (4 worker ranks)",
                  f"{'ranks':<6} {'logging':<8} {'ExtremeScale':>12} {'MPIExecutor':>12} "
                  f"{'MPIExecutor/ours':>17}"]
        for logging_on in (True, False):
            for ranks in (2, 4):
                ours = med("xs-mpi", logging_on, f"barrier{ranks}_ms")
                theirs = med("mpiexecutor", logging_on, f"barrier{ranks}_ms")
                if ours is None and theirs is None:
                    continue
                ratio = f"{theirs / ours:.0f}x" if ours and theirs else "-"
                lines.append(f"{ranks:<6} {'on' if logging_on else 'off':<8} "
                             f"{ours or float('nan'):>12.2f} {theirs or float('nan'):>12.2f} "
                             f"{ratio:>17}")
    return "\n".join(lines)


def run_in_subprocess(kind: str, logging_on: bool, args: argparse.Namespace) -> dict[str, Any]:
    """One case in a fresh interpreter, so no case inherits another's logging or threads."""
    cmd = [sys.executable, os.path.abspath(__file__), "--case", kind,
           "--logging", "on" if logging_on else "off", "--tasks", str(args.tasks),
           "--latency", str(args.latency), "--mpi-tasks", str(args.mpi_tasks)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    for line in proc.stdout.splitlines():
        if line.startswith("CASE "):
            return json.loads(line[5:])  # type: ignore[no-any-return]
    raise RuntimeError(f"case {kind} (logging {logging_on}) failed:\n{proc.stderr[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=2000, help="no-op apps for throughput")
    p.add_argument("--latency", type=int, default=100, help="sequential no-op apps for latency")
    p.add_argument("--mpi-tasks", type=int, default=40, help="sequential Barrier tasks per width")
    p.add_argument("--repeat", type=int, default=3, help="runs of every case, interleaved")
    p.add_argument("--only", nargs="*", default=None,
                   help="executors to run (xs htex threads xs-mpi mpiexecutor)")
    p.add_argument("--json", help="also write every measurement here")
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--logging", choices=("on", "off"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.getLogger("rankpool").setLevel(logging.WARNING)
    # HTEX starts interchange.py and process_worker_pool.py from PATH: the venv's bin
    bindir = os.path.dirname(sys.executable)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    if args.case:
        with tempfile.TemporaryDirectory(prefix="rankpool-bench-") as workdir:
            out = run_case(args.case, args.logging == "on", args, workdir)
        print("CASE " + json.dumps(out), flush=True)
        return 0
    kinds = args.only or ["xs", "htex", "threads", "xs-mpi", "mpiexecutor"]
    rows = []
    for repeat in range(args.repeat):
        for logging_on in (True, False):
            for kind in kinds:
                print(f"run {repeat + 1}/{args.repeat}: {kind}, "
                      f"logging {'on' if logging_on else 'off'}",
                      file=sys.stderr, flush=True)
                rows.append(run_in_subprocess(kind, logging_on, args))
    print(report(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
