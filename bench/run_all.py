"""Every system, one run: rankpool against Parsl, mpi4py.futures, executorlib and the stdlib.

    python bench/run_all.py [--out bench/results] [--quick] [--rounds 2] [--only NAME ...]
                            [--skip-scale] [--skip-dispatch] [--profile]

Writes ``results.json``, ``results.md`` (the tables) and PNG plots into ``--out``. Systems,
each with 2 workers (2 worker ranks or processes), or 4 worker ranks for the multi-rank
metrics, every one in a fresh interpreter, one after the other (``--rounds`` times,
interleaved; the tables show medians):

==========================  ==========================================================
rankpool.Executor            ``Executor(max_ranks=2)``; ``max_ranks=4`` for MPI tasks
rankpool.CommExecutor        under ``mpiexec -n 3`` (``-n 5`` for MPI tasks)
ExtremeScaleExecutor (DFK)   through Parsl's DataFlowKernel, ``ranks_per_node=2`` (4)
Parsl HTEX direct            ``HighThroughputExecutor.submit``, 2 workers
Parsl HTEX direct (tuned)    the same with ``prefetch_capacity=256`` (no NumPy round trips)
Parsl HTEX (DFK)             through the DataFlowKernel, 2 workers
Parsl MPIExecutor (DFK)      MPI tasks only: ``mpiexec`` per task (bash apps)
mpi4py.futures               ``MPIPoolExecutor(max_workers=2)``
executorlib                  ``SingleNodeExecutor`` (block allocation for 1-rank tasks)
ProcessPoolExecutor          ``ProcessPoolExecutor(2)``
==========================  ==========================================================

Metrics: no-op throughput (all submitted, then all awaited; sized to take about 2 s, median
of 3), one task's round trip (median of sequential submit + result), 2- and 4-rank round
trips (a ``Barrier``), start to first result, NumPy round trips of 1 MB and 64 MB arrays
(``echo(a) -> a``; GB/s = array bytes / round-trip time), and a mixed workload of 1-, 2- and
4-rank tasks sleeping 5-50 ms (fixed seed) on 4 worker ranks: utilisation = busy
rank-seconds / (4 x makespan). Unless skipped it also runs ``bench/scale_sim.py`` and
``bench/pool_dispatch.py``. ``--profile`` samples rankpool.Executor's processes with py-spy
during its throughput runs. The machine is shared: compare within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from suite_cases import CASES, comm_job  # noqa: E402
from suite_report import machine, median_rows, plots, report  # noqa: E402
from suite_tasks import SYSTEMS  # noqa: E402


def run_case(name: str, q: argparse.Namespace) -> dict[str, Any]:
    """One case in a fresh interpreter; its figures, or the reason it could not run."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        path = fh.name
    cmd = [sys.executable, os.path.abspath(__file__), "--case", name, "--result", path,
           *q.passthrough]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=q.case_timeout,
                              cwd=tempfile.gettempdir())
        with open(path) as fh:
            text = fh.read()
        got: dict[str, Any] = json.loads(text) if text else {}
        if proc.returncode != 0 and "error" not in got:
            got["error"] = f"exit code {proc.returncode}: {proc.stderr.strip()[-800:]}"
    except subprocess.TimeoutExpired:
        got = {"error": f"did not finish within {q.case_timeout:.0f} s"}
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    got["case_s"] = time.perf_counter() - t
    status = got.get("error", "ok")
    print(f"  {name}: {status if len(status) < 300 else status[:300] + '...'} "
          f"({got['case_s']:.0f} s)", file=sys.stderr, flush=True)
    return got


def case_main(name: str, q: argparse.Namespace, path: str) -> int:
    out: dict[str, Any]
    try:
        out = CASES[name](q)
    except Exception as exc:  # recorded, not raised: one system failing must not end the run
        import traceback
        out = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
    with open(path, "w") as fh:
        json.dump(out, fh)
    return 0


# =============================================================================================


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join("bench", "results"), help="output directory")
    p.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    p.add_argument("--rounds", type=int, help="runs of every case, interleaved (2; --quick: 1)")
    p.add_argument("--only", nargs="*", choices=SYSTEMS, metavar="NAME", help="a subset of systems")
    p.add_argument("--skip-scale", action="store_true", help="do not run bench/scale_sim.py")
    p.add_argument("--skip-dispatch", action="store_true", help="do not run bench/pool_dispatch.py")
    p.add_argument("--profile", action="store_true", help="py-spy rankpool.Executor's processes")
    p.add_argument("--case-timeout", type=float, default=300.0, help="seconds per case")
    p.add_argument("--case", choices=list(CASES), help=argparse.SUPPRESS)
    p.add_argument("--comm-job", choices=("one", "mpi"), help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    q = p.parse_args(argv)
    full = not q.quick
    if q.rounds is None:
        q.rounds = 2 if full else 1
    q.seconds = 2.0 if full else 0.3
    q.warmup = 500 if full else 100
    q.min_tasks, q.max_tasks = (1000, 200_000) if full else (200, 5000)
    q.repeat = 3 if full else 1
    q.rtt = 200 if full else 20
    q.mpi_rtt = 20 if full else 4
    q.np_small, q.np_big = (20, 5) if full else (3, 1)
    q.mixed = 120 if full else 24
    q.passthrough = (["--quick"] if q.quick else []) + (["--profile"] if q.profile else [])
    return q


def main(argv: list[str] | None = None) -> int:
    q = parse(argv)
    if q.case:
        return case_main(q.case, q, q.result)
    if q.comm_job:
        return comm_job(q.comm_job, q, q.result)
    out_dir = os.path.abspath(q.out)
    os.makedirs(out_dir, exist_ok=True)
    started = time.perf_counter()
    names = q.only or SYSTEMS
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in range(q.rounds):
        print(f"round {r + 1} of {q.rounds}", file=sys.stderr, flush=True)
        for name in names:
            runs[name].append(run_case(name, q))
    given = argv if argv is not None else sys.argv[1:]
    result: dict[str, Any] = {"command": " ".join(["python bench/run_all.py", *given]),
                              "machine": machine(), "runs": runs, "rows": median_rows(runs)}
    if not q.skip_dispatch:
        print("pool dispatch (bench/pool_dispatch.py)", file=sys.stderr, flush=True)
        result["dispatch"] = _module_run("pool_dispatch", ["--quick"] if q.quick else [])
    if not q.skip_scale:
        print("scale by simulation (bench/scale_sim.py)", file=sys.stderr, flush=True)
        extra = ["--quick"] if q.quick else []
        result["scale"] = _module_run("scale_sim", extra + (["--profile"] if q.profile else []))
    result["plots"] = plots(result["rows"], out_dir, result.get("scale"))
    result["elapsed_s"] = time.perf_counter() - started
    text = report(result)
    with open(os.path.join(out_dir, "results.md"), "w") as fh:
        fh.write(text)
    with open(os.path.join(out_dir, "results.json"), "w") as fh:
        json.dump(result, fh, indent=1, default=str)
    print(text)
    print(f"written to {out_dir} in {result['elapsed_s']:.0f} s", file=sys.stderr)
    return 0


def _module_run(module: str, extra: list[str]) -> dict[str, Any]:
    """Run a sibling benchmark script in its own interpreter; its JSON, or why it failed."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        path = fh.name
    try:
        proc = subprocess.run([sys.executable, os.path.join(HERE, f"{module}.py"), "--json", path,
                               *extra], capture_output=True, text=True, timeout=1200)
        sys.stderr.write(proc.stderr[-3000:])
        if proc.returncode != 0:
            return {"error": f"exit code {proc.returncode}: {proc.stderr.strip()[-800:]}"}
        with open(path) as fh:
            return json.load(fh)  # type: ignore[no-any-return]
    except subprocess.TimeoutExpired:
        return {"error": "did not finish within 1200 s"}
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    # Parsl's and executorlib's helpers start from PATH: the venv's bin first
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    # workers unpickle this directory's functions by reference
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p)
    sys.exit(main())
