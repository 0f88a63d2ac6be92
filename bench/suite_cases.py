"""One case per system: start it, run the shared measurements, shut it down."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
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
from cpu_split import cpu_per_task, executor_processes  # noqa: E402
from suite_measure import (  # noqa: E402
    System,
    mixed,
    mpi_metrics,
    one_rank_metrics,
    sized_throughput,
)
from suite_tasks import (  # noqa: E402
    MPI_WORKERS,
    WORKERS,
    barrier,
    nap,
    noop,
    world_barrier,
    world_nap,
)

#: no-op tasks whose CPU time is split by process, at least (the run's own count when larger)
CPU_TASKS = 100_000


def case_executor(q: argparse.Namespace) -> dict[str, Any]:
    from rankpool import Executor
    out: dict[str, Any] = {}
    run_dir = tempfile.mkdtemp(prefix="bench-rankpool-")
    t = time.perf_counter()
    with Executor(max_ranks=WORKERS, run_dir=run_dir) as ex:
        ex.submit(noop).result()
        out["first_result_s"] = time.perf_counter() - t
        one_rank_metrics(System(ex.submit), q, out)
        # 100,000 tasks: a process's CPU time is read in 10 ms ticks, 0.1 µs a task here
        out["cpu_us_per_task"] = cpu_per_task(
            ex, functools.partial(bench_executor.throughput, functools.partial(ex.submit, noop)),
            max(out["tasks"], CPU_TASKS))
        if q.profile:
            out["profile"] = profile_executor(ex, q)
    with Executor(max_ranks=MPI_WORKERS, run_dir=run_dir) as ex:
        ex.submit(noop).result()
        mpi_metrics(System(ex.submit,
                           lambda k, fn, *a: ex.requirements(num_ranks=k).submit(fn, *a)),
                    q, out)
    return out


def profile_executor(ex: Any, q: argparse.Namespace) -> dict[str, Any]:
    """py-spy on the front-end, the interchange and the pool's ranks during a no-op flood."""
    from pyspy import start_pyspy, summarize_raw
    seconds = 6 if not q.quick else 2
    workdir = tempfile.mkdtemp(prefix="bench-profile-")
    targets = {name: p.pid for name, p in executor_processes(ex).items()
               if not isinstance(p, list)}
    spies = {name: (start_pyspy(pid, seconds, os.path.join(workdir, f"{i}.txt"), threads=True),
                    os.path.join(workdir, f"{i}.txt"))
               for i, (name, pid) in enumerate(targets.items())}
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
    from rankpool.launchers.mpiexec import find_mpiexec
    out: dict[str, Any] = {}
    for ranks, part in ((WORKERS + 1, "one"), (MPI_WORKERS + 1, "mpi")):
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
            path = fh.name
        cmd = [find_mpiexec(), "-n", str(ranks), sys.executable, os.path.join(HERE, "run_all.py"),
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


def case_htex_tuned(q: argparse.Namespace) -> dict[str, Any]:
    """No-op throughput and round trip only: prefetch changes nothing for the NumPy round
    trips, which the untuned row measures."""
    out: dict[str, Any] = {}
    t = time.perf_counter()
    with bench_executor.htex_tuned(WORKERS) as submit:
        submit(noop).result()
        out["first_result_s"] = time.perf_counter() - t
        submit0 = functools.partial(submit, noop)
        out.update(sized_throughput(submit0, q))
        out["rtt_ms"] = bench_executor.round_trip(submit0, q.rtt)
    return out


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
            out[f"rtt{k}_ms"] = bench_executor.round_trip(lambda: ex.submit(world_barrier),
                                                          q.mpi_rtt)
    # mixed widths need one mpiexec per task (no block allocation)
    with SingleNodeExecutor(max_cores=MPI_WORKERS) as ex:
        def ranks(k: int, fn: Callable[..., Any], *args: Any) -> Any:
            return ex.submit(world_nap if fn is nap else world_barrier, *args,
                             resource_dict={"cores": k})
        for k in (2, 4):
            out[f"rtt{k}_percall_ms"] = bench_executor.round_trip(
                lambda k=k: ranks(k, barrier), max(3, q.mpi_rtt // 4))
        out.update(mixed(System(ex.submit, ranks), q))
    return out


CASES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "rankpool.Executor": case_executor, "rankpool.CommExecutor": case_comm,
    "ExtremeScaleExecutor (DFK)": case_xs, "Parsl HTEX direct": case_htex_direct,
    "Parsl HTEX direct (tuned)": case_htex_tuned,
    "Parsl HTEX (DFK)": case_htex_dfk, "Parsl MPIExecutor (DFK)": case_mpiexecutor,
    "mpi4py.futures": case_mpi4py, "executorlib": case_executorlib,
    "ProcessPoolExecutor": case_process_pool,
}
