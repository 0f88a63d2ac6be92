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
import functools
import heapq
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import executor as bench_executor  # noqa: E402  (bench/executor.py)

WORKERS = 2
MPI_WORKERS = 4
MB = 1 << 20

#: display order; the tables and plots follow it
SYSTEMS = ["rankpool.Executor", "rankpool.CommExecutor", "ExtremeScaleExecutor (DFK)",
           "Parsl HTEX direct", "Parsl HTEX (DFK)", "Parsl MPIExecutor (DFK)", "mpi4py.futures",
           "executorlib", "ProcessPoolExecutor"]
OURS = ("rankpool.Executor", "rankpool.CommExecutor", "ExtremeScaleExecutor (DFK)")


# =============================================================================================
# task functions (pickled by value from __main__, or by reference from this module)
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
class System:
    """What a case hands the measurements: ``submit(fn, *args)``; ``submit_ranks(k, fn, *args)``
    for multi-rank tasks (None where the system has none)."""

    def __init__(self, submit: Callable[..., Any],
                 submit_ranks: Callable[..., Any] | None = None,
                 nap_fn: Callable[..., Any] = nap, barrier_fn: Callable[..., Any] = barrier) -> None:
        self.submit = submit
        self.submit_ranks = submit_ranks
        self.nap_fn = nap_fn
        self.barrier_fn = barrier_fn


def result_of(future: Any) -> Any:
    value = future.result()
    return value[0] if isinstance(value, list) else value  # executorlib: one value per rank


def sized_throughput(submit0: Callable[[], Any], q: argparse.Namespace) -> dict[str, Any]:
    """No-op throughput: a warm-up sizes the runs to about ``q.seconds`` each; median of runs."""
    warm = bench_executor.throughput(submit0, q.warmup)
    n = int(min(q.max_tasks, max(q.min_tasks, warm * q.seconds)))
    rates = [bench_executor.throughput(submit0, n) for _ in range(q.repeat)]
    return {"tasks_per_s": statistics.median(rates), "tasks_per_s_runs": rates, "tasks": n}


def one_rank_metrics(system: System, q: argparse.Namespace, out: dict[str, Any]) -> None:
    import numpy as np
    submit0 = functools.partial(system.submit, noop)
    out.update(sized_throughput(submit0, q))
    out["rtt_ms"] = bench_executor.round_trip(submit0, q.rtt)
    for label, size, count in (("1MB", MB, q.np_small), ("64MB", 64 * MB, q.np_big)):
        a = np.ones(size // 8)
        back = result_of(system.submit(echo, a))  # warm-up, and a check
        if not (isinstance(back, np.ndarray) and back.nbytes == a.nbytes):
            raise RuntimeError(f"echo of {label} came back as {type(back).__name__}")
        ms = bench_executor.round_trip(lambda: system.submit(echo, a), count)
        out[f"np_{label}_ms"] = ms
        out[f"np_{label}_GBps"] = size / (ms / 1e3) / 1e9


def mpi_metrics(system: System, q: argparse.Namespace, out: dict[str, Any]) -> None:
    assert system.submit_ranks is not None
    for k in (2, 4):
        fn = system.barrier_fn
        size = result_of(system.submit_ranks(k, fn))
        if size != k:
            raise RuntimeError(f"a {k}-rank task ran on {size} ranks")
        out[f"rtt{k}_ms"] = bench_executor.round_trip(lambda: system.submit_ranks(k, fn), q.mpi_rtt)
    out.update(mixed(system, q))


def schedule_bound(work: list[tuple[int, float]], ranks: int, backfill: bool) -> float:
    """Utilisation of a zero-overhead list schedule of ``work`` on ``ranks`` ranks (one node).

    Without backfill a blocked task stops every later one: on one node this is also what a
    reservation for the first blocked task does when run times are unknown (it holds every
    rank that frees up until it fits), i.e. rankpool's placement policy. With backfill any
    later task that fits starts (a wide task may starve in a continuous stream).
    """
    t, free, queue, running = 0.0, ranks, list(work), []
    while queue or running:
        i = 0
        while i < len(queue):
            k, d = queue[i]
            if k <= free:
                free -= k
                heapq.heappush(running, (t + d, k))
                queue.pop(i)
                i = 0 if not backfill else i
                continue
            if not backfill:
                break
            i += 1
        t, k = heapq.heappop(running)
        free += k
    return sum(k * d for k, d in work) / (ranks * t)


def mixed(system: System, q: argparse.Namespace) -> dict[str, Any]:
    """The mixed workload, all submitted at once; utilisation from the nominal sleeps."""
    assert system.submit_ranks is not None
    work = mixed_workload(q.mixed)
    busy = sum(k * d for k, d in work)
    t0 = time.time()
    futures = [system.submit_ranks(k, system.nap_fn, d) for k, d in work]
    spans = [result_of(f) for f in futures]
    makespan = time.time() - t0
    trace = [[k, s - t0, e - t0] for (k, _), v in zip(work, spans)
             if isinstance(v, (list, tuple)) for s, e in [v]]
    return {"mixed_utilisation": busy / (MPI_WORKERS * makespan), "mixed_makespan_s": makespan,
            "mixed_ideal_s": busy / MPI_WORKERS, "mixed_tasks": len(work), "mixed_trace": trace,
            "mixed_bound_fifo": schedule_bound(work, MPI_WORKERS, backfill=False),
            "mixed_bound_backfill": schedule_bound(work, MPI_WORKERS, backfill=True)}


# =============================================================================================
# the cases: each runs in a fresh interpreter and returns a dict of figures
def case_executor(q: argparse.Namespace) -> dict[str, Any]:
    from rankpool import Executor
    out: dict[str, Any] = {}
    run_dir = tempfile.mkdtemp(prefix="bench-rankpool-")
    t = time.perf_counter()
    with Executor(max_ranks=WORKERS, run_dir=run_dir) as ex:
        ex.submit(noop).result()
        out["first_result_s"] = time.perf_counter() - t
        one_rank_metrics(System(ex.submit), q, out)
        out["cpu_us_per_task"] = cpu_per_task(ex, max(out["tasks"], 20_000))
        if q.profile:
            out["profile"] = profile_executor(ex, q)
    with Executor(max_ranks=MPI_WORKERS, run_dir=run_dir) as ex:
        ex.submit(noop).result()
        mpi_metrics(System(ex.submit, lambda k, fn, *a: ex.requirements(num_ranks=k).submit(fn, *a)),
                    q, out)
    return out


def executor_processes(ex: Any) -> dict[str, Any]:
    """psutil handles of an Executor's processes: front-end, interchange, the pool's ranks."""
    import psutil
    ranks = [c for p in ex._blocks.procs.values()
             for c in psutil.Process(p.pid).children(recursive=True) if "python" in c.name()]
    procs = {"front-end": psutil.Process(), "interchange": psutil.Process(ex.client.proc.pid)}
    procs.update({f"pool rank {i}": p for i, p in enumerate(sorted(ranks, key=lambda p: p.pid))})
    return procs


def cpu_per_task(ex: Any, n: int) -> dict[str, float]:
    """CPU time each process spends per no-op task during one throughput run, in µs."""
    procs = executor_processes(ex)
    before = {k: sum(p.cpu_times()[:2]) for k, p in procs.items()}
    bench_executor.throughput(functools.partial(ex.submit, noop), n)
    return {k: (sum(p.cpu_times()[:2]) - before[k]) / n * 1e6 for k, p in procs.items()}


def profile_executor(ex: Any, q: argparse.Namespace) -> dict[str, Any]:
    """py-spy on the front-end, the interchange and the pool's ranks during a no-op flood."""
    from scale_sim import start_pyspy, summarize_raw
    seconds = 6 if not q.quick else 2
    workdir = tempfile.mkdtemp(prefix="bench-profile-")
    targets = {name: p.pid for name, p in executor_processes(ex).items()}
    spies = {name: (start_pyspy(pid, seconds, os.path.join(workdir, f"{i}.txt"), threads=True),
                    os.path.join(workdir, f"{i}.txt")) for i, (name, pid) in enumerate(targets.items())}
    end = time.monotonic() + seconds + 0.5
    submit0 = functools.partial(ex.submit, noop)
    while time.monotonic() < end:
        bench_executor.throughput(submit0, 5000)
    out: dict[str, Any] = {}
    for name, (spy, path) in spies.items():
        if spy is None:
            return {"error": "py-spy not found"}
        spy.wait(60)
        out[name] = summarize_raw(path, top=15) if os.path.exists(path) else {"error": "no samples"}
    return out


def case_comm(q: argparse.Namespace) -> dict[str, Any]:
    """Two mpiexec jobs: 3 ranks (2 workers) and 5 ranks (4 workers, MPI tasks)."""
    from rankpool.mpiexec import find_mpiexec
    out: dict[str, Any] = {}
    for ranks, part in ((WORKERS + 1, "one"), (MPI_WORKERS + 1, "mpi")):
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
            path = fh.name
        cmd = [find_mpiexec(), "-n", str(ranks), sys.executable, os.path.abspath(__file__),
               "--comm-job", part, "--result", path, *q.passthrough]
        launched = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=q.case_timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"mpiexec -n {ranks} failed:\n{proc.stderr[-2000:]}")
        with open(path) as fh:
            got = json.load(fh)
        os.unlink(path)
        if part == "one":
            got["launch_to_first_s"] = got.pop("first_at") - launched
        out.update(got)
    return out


def comm_job(part: str, q: argparse.Namespace, path: str) -> int:
    from mpi4py import MPI

    from rankpool import CommExecutor
    out: dict[str, Any] = {}
    t = time.perf_counter()
    with CommExecutor(MPI.COMM_WORLD, root=0) as ex:
        if ex is not None:
            ex.submit(noop).result()
            if part == "one":
                out["first_result_s"] = time.perf_counter() - t
                out["first_at"] = time.time()
                one_rank_metrics(System(ex.submit), q, out)
            else:
                mpi_metrics(System(ex.submit,
                                   lambda k, fn, *a: ex.requirements(num_ranks=k).submit(fn, *a)),
                            q, out)
            with open(path, "w") as fh:
                json.dump(out, fh)
    return 0


@contextlib.contextmanager
def dfk(kind: str, workdir: str) -> Iterator[Any]:
    """A DataFlowKernel over one executor of ``bench/parsl_executor.py``'s ``make_executor``."""
    import parsl
    from parsl_executor import make_executor
    config = parsl.Config(executors=[make_executor(kind, workdir)],
                          run_dir=os.path.join(workdir, "runinfo"))
    kernel = parsl.load(config)
    try:
        yield kernel
    finally:
        kernel.cleanup()
        parsl.clear()


def _apps() -> dict[str, Any]:
    """Parsl apps of this module's functions (declared where Parsl can see the spec kwarg)."""
    import parsl

    def p_echo(a: Any) -> Any:
        return a

    def p_nap(duration: float, comm: Any = None,
              parsl_resource_specification: dict = {}) -> tuple[float, float]:  # noqa: B006
        import time as _time
        start = _time.time()
        _time.sleep(duration)
        if comm is not None and comm.Get_size() > 1:
            comm.Barrier()
        return start, _time.time()

    def p_mpi_nap(duration: float, parsl_resource_specification: dict = {}) -> str:  # noqa: B006
        import shlex
        import sys as _sys
        code = (f"import time; from mpi4py import MPI; time.sleep({duration!r}); "
                "MPI.COMM_WORLD.Barrier()")
        return f"$PARSL_MPI_PREFIX {shlex.quote(_sys.executable)} -c {shlex.quote(code)}"

    return {"echo": parsl.python_app(p_echo), "nap": parsl.python_app(p_nap),
            "mpi_nap": parsl.bash_app(p_mpi_nap)}


def _dfk_case(kind: str, mpi_kind: str | None, q: argparse.Namespace) -> dict[str, Any]:
    from parsl_executor import barrier as p_barrier
    from parsl_executor import mpi_barrier as p_mpi_barrier
    from parsl_executor import noop as p_noop
    apps = _apps()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-dfk-") as workdir:
        if kind:
            t = time.perf_counter()
            with dfk(kind, workdir):
                p_noop().result()
                out["first_result_s"] = time.perf_counter() - t

                def submit(fn: Callable[..., Any], *args: Any) -> Any:
                    return p_noop() if fn is noop else apps["echo"](*args)
                [f.result() for f in [p_noop() for _ in range(50)]]  # every worker warm
                one_rank_metrics(System(submit), q, out)
        if mpi_kind:
            mpi_dir = os.path.join(workdir, "mpi")
            os.makedirs(mpi_dir)
            with dfk(mpi_kind, mpi_dir):
                if mpi_kind == "mpiexecutor":
                    def spec(k: int) -> dict[str, Any]:
                        return {"num_ranks": k, "num_nodes": 1, "ranks_per_node": k}
                    barrier_app, nap_app = p_mpi_barrier, apps["mpi_nap"]
                else:
                    def spec(k: int) -> dict[str, Any]:
                        return {"num_ranks": k}
                    barrier_app, nap_app = p_barrier, apps["nap"]

                def ranks(k: int, fn: Callable[..., Any], *args: Any) -> Any:
                    app = barrier_app if fn is barrier else nap_app
                    return _Checked(app(*args, parsl_resource_specification=spec(k)), k,
                                    mpi_kind == "mpiexecutor")
                ranks(2, barrier).result()  # warm up
                mpi_metrics(System(lambda fn, *a: None, ranks), q, out)
    return out


class _Checked:
    """A bash app's future answers its exit code: stand in the rank count the check expects."""

    def __init__(self, future: Any, ranks: int, bash: bool) -> None:
        self.future, self.ranks, self.bash = future, ranks, bash

    def result(self) -> Any:
        value = self.future.result()
        if self.bash:
            if value != 0:
                raise RuntimeError(f"bash app exited with {value}")
            return self.ranks
        return value


def case_xs(q: argparse.Namespace) -> dict[str, Any]:
    return _dfk_case("xs", "xs-mpi", q)


def case_htex_dfk(q: argparse.Namespace) -> dict[str, Any]:
    return _dfk_case("htex", None, q)


def case_mpiexecutor(q: argparse.Namespace) -> dict[str, Any]:
    return _dfk_case("", "mpiexecutor", q)


def _factory_case(factory: Callable[[int], Any], q: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    t = time.perf_counter()
    with factory(WORKERS) as submit:
        submit(noop).result()
        out["first_result_s"] = time.perf_counter() - t
        one_rank_metrics(System(submit), q, out)
    return out


def case_htex_direct(q: argparse.Namespace) -> dict[str, Any]:
    return _factory_case(bench_executor.htex_direct, q)


def case_mpi4py(q: argparse.Namespace) -> dict[str, Any]:
    return _factory_case(bench_executor.mpi4py_futures, q)


def case_process_pool(q: argparse.Namespace) -> dict[str, Any]:
    return _factory_case(bench_executor.process_pool, q)


def case_executorlib(q: argparse.Namespace) -> dict[str, Any]:
    from executorlib import SingleNodeExecutor
    out: dict[str, Any] = {}
    t = time.perf_counter()
    with SingleNodeExecutor(max_workers=WORKERS, block_allocation=True) as ex:
        ex.submit(noop).result()
        out["first_result_s"] = time.perf_counter() - t
        one_rank_metrics(System(ex.submit), q, out)
    # fixed-width MPI tasks: block allocation keeps one k-rank worker alive
    for k in (2, 4):
        with SingleNodeExecutor(max_workers=1, block_allocation=True,
                                resource_dict={"cores": k}) as ex:
            ex.submit(world_barrier).result()
            out[f"rtt{k}_ms"] = bench_executor.round_trip(lambda: ex.submit(world_barrier), q.mpi_rtt)
    # mixed widths need one mpiexec per task (no block allocation)
    with SingleNodeExecutor(max_cores=MPI_WORKERS) as ex:
        def ranks(k: int, fn: Callable[..., Any], *args: Any) -> Any:
            return ex.submit(world_nap if fn is nap else world_barrier, *args,
                             resource_dict={"cores": k})
        for k in (2, 4):
            out[f"rtt{k}_percall_ms"] = bench_executor.round_trip(
                lambda: ranks(k, barrier), max(3, q.mpi_rtt // 4))
        out.update(mixed(System(ex.submit, ranks), q))
    return out


CASES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "rankpool.Executor": case_executor, "rankpool.CommExecutor": case_comm,
    "ExtremeScaleExecutor (DFK)": case_xs, "Parsl HTEX direct": case_htex_direct,
    "Parsl HTEX (DFK)": case_htex_dfk, "Parsl MPIExecutor (DFK)": case_mpiexecutor,
    "mpi4py.futures": case_mpi4py, "executorlib": case_executorlib,
    "ProcessPoolExecutor": case_process_pool,
}


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
# the report
def median_rows(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per system, the median of every numeric figure over the rounds that produced it."""
    rows: dict[str, dict[str, Any]] = {}
    for name, results in runs.items():
        ok = [r for r in results if "error" not in r]
        row: dict[str, Any] = {"rounds": len(ok)}
        if not ok:
            row["error"] = results[-1].get("error", "no result") if results else "not run"
        keys = {k for r in ok for k, v in r.items() if isinstance(v, (int, float))}
        for k in keys:
            values = [r[k] for r in ok if isinstance(r.get(k), (int, float))]
            row[k] = statistics.median(values)
        for r in ok[-1:]:
            for k in ("mixed_trace", "profile"):
                if k in r:
                    row[k] = r[k]
        rows[name] = row
    return rows


def _fmt(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def tables(rows: dict[str, dict[str, Any]]) -> str:
    ours = rows.get("rankpool.Executor", {}).get("tasks_per_s")
    out = [f"| system | no-op tasks/s | rankpool.Executor ÷ this | 1-task round trip ms | "
           f"start → 1st result s | 1 MB round trip ms | 64 MB round trip ms | 64 MB GB/s |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in SYSTEMS:
        r = rows.get(name)
        if r is None or "tasks_per_s" not in r:
            continue
        ratio = ours / r["tasks_per_s"] if ours else None
        out.append(f"| {name} | {r['tasks_per_s']:,.0f} | {_fmt(ratio, '.1f')} | "
                   f"{_fmt(r.get('rtt_ms'), '.2f')} | {_fmt(r.get('first_result_s'), '.2f')} | "
                   f"{_fmt(r.get('np_1MB_ms'), '.1f')} | {_fmt(r.get('np_64MB_ms'), '.0f')} | "
                   f"{_fmt(r.get('np_64MB_GBps'), '.2f')} |")
    out += ["", f"MPI tasks on {MPI_WORKERS} worker ranks:", "",
            "| system | 2-rank round trip ms | 4-rank round trip ms | mixed utilisation % | "
            "mixed makespan s (ideal) |", "|---|---:|---:|---:|---:|"]
    for name in SYSTEMS:
        r = rows.get(name)
        if r is None or "rtt2_ms" not in r:
            continue
        util = r.get("mixed_utilisation")
        extra = ""
        if "rtt2_percall_ms" in r:
            extra = (f" (block allocation; {r['rtt2_percall_ms']:.0f} / {r['rtt4_percall_ms']:.0f}"
                     f" ms with an mpiexec per call)")
        out.append(f"| {name}{extra} | {r['rtt2_ms']:.2f} | {r['rtt4_ms']:.2f} | "
                   f"{_fmt(None if util is None else util * 100, '.1f')} | "
                   f"{_fmt(r.get('mixed_makespan_s'), '.2f')} "
                   f"({_fmt(r.get('mixed_ideal_s'), '.2f')}) |")
    bounds = next((r for r in rows.values() if "mixed_bound_fifo" in r), None)
    if bounds:
        out += ["", f"The same workload scheduled with zero overhead: "
                f"{bounds['mixed_bound_fifo'] * 100:.1f} % in arrival order (no task passes a "
                f"blocked one; what a reservation without run-time estimates amounts to on one "
                f"node), {bounds['mixed_bound_backfill'] * 100:.1f} % with greedy backfill "
                f"(any task that fits starts; wide tasks can starve)."]
    skipped = [f"- {n}: {rows[n]['error']}" for n in SYSTEMS if n in rows and "error" in rows[n]]
    if skipped:
        out += ["", "Not measured:", "", *skipped]
    return "\n".join(out)


def targets(rows: dict[str, dict[str, Any]]) -> list[tuple[str, bool | None, str]]:
    """The issue's targets on this machine, as ratios within this run."""
    def rate(name: str) -> float | None:
        return rows.get(name, {}).get("tasks_per_s")

    res: list[tuple[str, bool | None, str]] = []
    for ours in ("rankpool.Executor", "rankpool.CommExecutor"):
        mine = rate(ours)
        for other, need in (("Parsl HTEX direct", 50), ("mpi4py.futures", 10),
                            ("ProcessPoolExecutor", 3)):
            theirs = rate(other)
            if mine and theirs:
                res.append((f"{ours} throughput ≥ {need}× {other}", mine / theirs >= need,
                            f"{mine / theirs:.1f}×"))
    for ours in OURS:
        gbps = rows.get(ours, {}).get("np_64MB_GBps")
        if gbps is not None:
            res.append((f"{ours}: 64 MB NumPy round trip ≥ 1 GB/s", gbps >= 1.0, f"{gbps:.2f} GB/s"))
    for ours in OURS:
        util = rows.get(ours, {}).get("mixed_utilisation")
        if util is not None:
            res.append((f"{ours}: mixed-workload utilisation ≥ 90 %", util >= 0.9,
                        f"{util * 100:.1f} %"))
    return res


def plots(rows: dict[str, dict[str, Any]], out_dir: str, scale: dict[str, Any] | None) -> list[str]:
    """PNG plots; returns their file names."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    made = []
    names = [n for n in SYSTEMS if "tasks_per_s" in rows.get(n, {})]
    colours = ["#1f6fb4" if n in OURS else "#999999" for n in names]

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    panels = [("tasks_per_s", "no-op tasks/s (higher is better)", True),
              ("rtt_ms", "1-task round trip, ms (lower is better)", True),
              ("first_result_s", "start → first result, s (lower is better)", True),
              ("np_64MB_GBps", "64 MB NumPy round trip, GB/s (higher is better)", False)]
    for ax, (key, title, log) in zip(axes.flat, panels):
        vals = [rows[n].get(key, 0) or 0 for n in names]
        ax.barh(names, vals, color=colours)
        ax.invert_yaxis()
        if log:
            ax.set_xscale("log")
        ax.set_title(title, fontsize=10)
        ax.tick_params(labelsize=8)
        for y, v in enumerate(vals):
            ax.text(v, y, f" {v:,.3g}", va="center", fontsize=7)
    fig.suptitle(f"{WORKERS} workers each (blue: rankpool)", fontsize=11)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "systems.png"), dpi=80)
    plt.close(fig)
    made.append("systems.png")

    mpi_names = [n for n in SYSTEMS if "rtt2_ms" in rows.get(n, {})]
    if mpi_names:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
        y = range(len(mpi_names))
        for off, k in ((-0.2, 2), (0.2, 4)):
            ax1.barh([i + off for i in y], [rows[n][f"rtt{k}_ms"] for n in mpi_names], height=0.4,
                     label=f"{k} ranks")
        ax1.set_yticks(list(y), mpi_names, fontsize=8)
        ax1.invert_yaxis()
        ax1.set_xscale("log")
        ax1.set_title("Barrier task round trip, ms (lower is better)", fontsize=10)
        ax1.legend(fontsize=8)
        util = [rows[n].get("mixed_utilisation", 0) * 100 for n in mpi_names]
        ax2.barh(mpi_names, util, color=["#1f6fb4" if n in OURS else "#999999" for n in mpi_names])
        ax2.axvline(90, color="red", lw=1, ls="--")
        ax2.invert_yaxis()
        ax2.set_xlim(0, 100)
        ax2.set_title(f"mixed 1/2/4-rank workload: utilisation of {MPI_WORKERS} ranks, %",
                      fontsize=10)
        ax2.tick_params(labelsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "mpi_tasks.png"), dpi=80)
        plt.close(fig)
        made.append("mpi_tasks.png")

    traced = [n for n in mpi_names if rows[n].get("mixed_trace")]
    if traced:
        fig, axes = plt.subplots(len(traced), 1, figsize=(11, 1.3 * len(traced) + 0.6),
                                 squeeze=False)
        for ax, n in zip(axes[:, 0], traced):
            events = sorted([(s, k) for k, s, _ in rows[n]["mixed_trace"]]
                            + [(e, -k) for k, _, e in rows[n]["mixed_trace"]])
            xs, ys, busy = [0.0], [0], 0
            for t, dk in events:
                busy += dk
                xs.append(t)
                ys.append(busy)
            ax.fill_between(xs, ys, step="post", alpha=0.6,
                            color="#1f6fb4" if n in OURS else "#999999")
            ax.set_ylim(0, MPI_WORKERS)
            ax.set_xlim(0, rows[n]["mixed_makespan_s"])
            ax.set_yticks(range(MPI_WORKERS + 1))
            ax.tick_params(labelsize=7)
            ax.set_title(f"{n}: {rows[n]['mixed_utilisation'] * 100:.0f} % of {MPI_WORKERS} ranks "
                         f"busy, makespan {rows[n]['mixed_makespan_s']:.2f} s", fontsize=9, loc="left")
        axes[-1, 0].set_xlabel("seconds since the first submit (each row its own scale)")
        fig.suptitle("mixed workload: busy ranks over time, measured inside the tasks", fontsize=10)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "mixed_occupancy.png"), dpi=80)
        plt.close(fig)
        made.append("mixed_occupancy.png")

    if scale and scale.get("rows"):
        srows = scale["rows"]
        pools = [r["pools"] for r in srows]
        fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(12, 3.6))
        ax1.plot(pools, [r["tasks_per_s"] for r in srows], "o-")
        ax1.axhline(50_000, color="red", lw=1, ls="--")
        ax1.set_title("interchange throughput, tasks/s", fontsize=10)
        ax2.plot(pools, [r["latency_ms"]["median"] for r in srows], "o-", label="median")
        ax2.plot(pools, [r["latency_ms"]["p99"] for r in srows], "s--", label="p99")
        ax2.set_title("dispatch latency, ms", fontsize=10)
        ax2.legend(fontsize=8)
        ax3.plot(pools, [r["rss_peak_mb"] for r in srows], "o-")
        ax3.set_title("interchange peak RSS, MB", fontsize=10)
        for ax in (ax1, ax2, ax3):
            ax.set_xscale("log")
            ax.set_xlabel("simulated pools of 128 ranks")
            ax.set_ylim(bottom=0)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "scale.png"), dpi=80)
        plt.close(fig)
        made.append("scale.png")
    return made


def machine() -> dict[str, Any]:
    import psutil
    info: dict[str, Any] = {"host": socket.gethostname(), "python": platform.python_version(),
                            "platform": platform.platform(), "cores": os.cpu_count(),
                            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                            "load_average": os.getloadavg()}
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    for pkg in ("rankpool", "parsl", "mpi4py", "mpich", "pyzmq", "executorlib", "numpy"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version
            info[pkg] = version(pkg)
    return info


def report(result: dict[str, Any]) -> str:
    lines = ["# rankpool benchmark run", "", f"`{result['command']}`", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in result["machine"].items()), "",
             tables(result["rows"]), "", "## Targets", ""]
    for what, ok, figure in targets(result["rows"]):
        lines.append(f"- {'met' if ok else '**not met**'}: {what} ({figure})")
    scale = result.get("scale")
    if scale and "rows" in scale:
        import scale_sim
        lines += ["", "## Scale by simulation", "", scale_sim.table(scale["rows"]), ""]
        for what, ok, figure in scale_sim.targets(scale["rows"]):
            lines.append(f"- {'met' if ok else '**not met**'}: {what} ({figure})")
        for r in scale["rows"]:
            for key, when in (("profile", "flooded"), ("profile_idle", "idle")):
                summary = r.get(key, {})
                if "own" in summary:
                    top = ", ".join(f"{fn} {p:.0f} %" for fn, p in summary["own"][:6])
                    lines.append(f"- interchange at {r['pools']:,} pools, {when} (py-spy, "
                                 f"{summary['samples']} samples): {top}")
    elif scale:
        lines += ["", f"Scale simulation failed: {scale.get('error')}"]
    dispatch = result.get("dispatch")
    if dispatch and "by_ranks" in dispatch:
        import pool_dispatch
        lines += ["", "## Inside one pool (CommExecutor, oversubscribed)", "",
                  pool_dispatch.table(dispatch)]
    elif dispatch:
        lines += ["", f"Pool dispatch failed: {dispatch.get('error')}"]
    cpu = result["runs"].get("rankpool.Executor", [{}])
    cpu = [r["cpu_us_per_task"] for r in cpu if "cpu_us_per_task" in r]
    if cpu:
        lines += ["", "## rankpool.Executor: CPU per no-op task, by process "
                  "(µs, median of rounds)", "",
                  "| " + " | ".join(cpu[0]) + " | total |", "|" + "---:|" * (len(cpu[0]) + 1)]
        med = {k: statistics.median(c[k] for c in cpu if k in c) for k in cpu[0]}
        lines.append("| " + " | ".join(f"{v:.1f}" for v in med.values())
                     + f" | {sum(med.values()):.1f} |")
    prof = result["rows"].get("rankpool.Executor", {}).get("profile")
    if prof and "error" not in prof:
        lines += ["", "## Where rankpool.Executor's time goes (py-spy, own samples)", ""]
        for proc, summary in prof.items():
            if "own" in summary:
                top = ", ".join(f"{fn} {p:.0f} %" for fn, p in summary["own"][:6])
                threads = ", ".join(f"{fn} {p:.0f} %" for fn, p in summary["roots"][:3])
                lines.append(f"- {proc} ({summary['samples']} samples; by thread: {threads}): {top}")
    lines += ["", "Plots: " + ", ".join(f"![{p}]({p})" for p in result.get("plots", []))]
    return "\n".join(lines) + "\n"


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
