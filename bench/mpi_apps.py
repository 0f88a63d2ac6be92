"""MPI applications as tasks: the same programs started four ways, in one run.

    python bench/mpi_apps.py [--round-trips 10] [--apps 200] [--app-seconds 0]
                             [--only floor xs spawn mpi] [--json OUT]

Programs: ``world.c`` (compiled here with the bundled MPICH's ``mpicc``) and ``world.py``
(``python -m mpi4py``), both from ``tests/integration/mpi_programs``: every rank prints a line,
joins a barrier and exits. Ways to start them:

* ``floor``: a bare ``mpiexec -n 4 PROGRAM`` from this process (what no executor can beat);
* ``xs``: ExtremeScaleExecutor (one local pool of 8 worker ranks), a Parsl bash app
  ``$PARSL_MPI_PREFIX PROGRAM``: launcher mode;
* ``spawn``: the same pool, a Parsl python app calling ``run_mpi(argv, mode="spawn")``;
* ``mpi``: Parsl's MPIExecutor with the same bash app, ``mpiexec`` per task, 2 workers on a
  ``PBS_NODEFILE`` of two 4-rank "nodes" naming this host (8 ranks, as the pool).

Figures: the median round trip of ``--round-trips`` 4-rank applications run one after another
(C, then Python), of as many 4-rank Python apps in Parsl's MPI mode that start no program
(``xs`` and ``mpi``: what the executor itself costs an application task), and for ``--apps``
short C applications of mixed widths (1, 2 and 4 ranks, in turn) submitted at once: tasks/s
and *utilisation*, the rank-seconds the applications needed (each width's floor time times its
width) over 8 ranks times the wall time. Absolute figures are noisy on a shared machine;
compare within one run.

``--app-seconds S`` makes each mixed-width application sleep ``S`` seconds after ``MPI_Init``
(the floors are taken with the same argument). Every MPICH process spins in ``MPI_Init``,
its barriers and ``MPI_Finalize``, so on a machine with fewer cores than the pool's 8 ranks
short applications run into each other's spinning and the way that runs the fewest at once
wins; applications that mostly wait stand for applications whose ranks each have a core,
and the mixed figure then shows how each way packs applications onto its ranks.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import parsl
from parsl.executors import MPIExecutor
from parsl.launchers import SimpleLauncher
from parsl.providers import LocalProvider

from rankpool import ExtremeScaleExecutor
from rankpool.frontends.parsl.executor import local_provider

HERE = Path(__file__).resolve().parent
PROGRAMS = HERE.parent / "tests" / "integration" / "mpi_programs"
BIN = Path(sys.executable).parent
WIDTHS = (1, 2, 4)
POOL_RANKS = 8


@parsl.bash_app
def prefixed(argv: str, parsl_resource_specification: dict = {}) -> str:  # noqa: B006
    return f"$PARSL_MPI_PREFIX {argv} > /dev/null"


@parsl.python_app
def nothing(parsl_resource_specification: dict = {}) -> str:  # noqa: B006
    import os
    return os.environ["PARSL_NUM_RANKS"]


@parsl.python_app
def spawned(argv: list[str], parsl_resource_specification: dict = {}) -> float:  # noqa: B006
    from rankpool import run_mpi
    return run_mpi(argv, mode="spawn").seconds


def compile_c(workdir: str) -> str:
    out = os.path.join(workdir, "world")
    subprocess.run([str(BIN / "mpicc"), "-o", out, str(PROGRAMS / "world.c")], check=True,
                   timeout=120)
    return out


def median_of(fn: Callable[[], Any], n: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def floor_time(argv: list[str], width: int, n: int) -> float:
    line = [str(BIN / "mpiexec"), "-n", str(width), *argv]
    return median_of(lambda: subprocess.run(line, check=True, capture_output=True, timeout=120), n)


def executor(kind: str, workdir: str) -> Any:
    if kind in ("xs", "spawn"):
        return ExtremeScaleExecutor(label="xs", provider=local_provider(),
                                    ranks_per_node=POOL_RANKS + 1)
    nodefile = os.path.join(workdir, "nodefile")
    with open(nodefile, "w") as f:
        f.write(f"{socket.gethostname()}\n" * 2)
    init = (f"export PBS_NODEFILE={shlex.quote(nodefile)}; "
            f"export PATH={shlex.quote(str(BIN))}:$PATH")
    return MPIExecutor(label="mpi", max_workers_per_block=2, mpi_launcher="mpiexec",
                       provider=LocalProvider(launcher=SimpleLauncher(), worker_init=init,
                                              init_blocks=1, max_blocks=1))


def submit(kind: str, argv: list[str], width: int) -> Any:
    if kind == "spawn":
        return spawned(argv, parsl_resource_specification={"num_ranks": width})
    spec = {"num_nodes": 1, "ranks_per_node": width}  # Parsl's MPI mode asks for whole nodes
    return prefixed(shlex.join(argv), parsl_resource_specification=spec)


def run_parsl(kind: str, programs: dict[str, list[str]], mixed: list[str],
              floors: dict[int, float], args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    """Round trips of ``programs``, then the mixed-width run of ``mixed``."""
    config = parsl.Config(executors=[executor(kind, workdir)], initialize_logging=False,
                          run_dir=os.path.join(workdir, kind), strategy_period=0.5)
    dfk = parsl.load(config)
    out: dict[str, Any] = {}
    try:
        for name, argv in programs.items():
            out[f"{name}_4_ms"] = 1e3 * median_of(
                lambda argv=argv: submit(kind, argv, 4).result(), args.round_trips)
        if kind != "spawn":  # a python app on 4 ranks that starts nothing: the executor's part
            out["noop_4_ms"] = 1e3 * median_of(
                lambda: nothing(parsl_resource_specification={"num_nodes": 1,
                                                              "ranks_per_node": 4}).result(),
                args.round_trips)
        widths = [WIDTHS[i % len(WIDTHS)] for i in range(args.apps)]
        t = time.perf_counter()
        futures = [submit(kind, mixed, w) for w in widths]
        for f in futures:
            f.result()
        wall = time.perf_counter() - t
        out["mixed_tasks_per_s"] = args.apps / wall
        out["mixed_utilisation"] = sum(w * floors[w] for w in widths) / (POOL_RANKS * wall)
    finally:
        dfk.cleanup()
        parsl.clear()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--round-trips", type=int, default=10)
    p.add_argument("--apps", type=int, default=200)
    p.add_argument("--app-seconds", type=float, default=0.0,
                   help="seconds each mixed-width application sleeps after MPI_Init")
    p.add_argument("--only", nargs="*", default=["floor", "xs", "spawn", "mpi"])
    p.add_argument("--json")
    args = p.parse_args(argv)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        x for x in (str(HERE), os.environ.get("PYTHONPATH")) if x)
    os.environ["PATH"] = os.pathsep.join((str(BIN), os.environ.get("PATH", "")))
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as workdir:
        programs = {"c": [compile_c(workdir)],
                    "py": [sys.executable, "-m", "mpi4py", str(PROGRAMS / "world.py")]}
        mixed = [*programs["c"], "0", str(args.app_seconds)] if args.app_seconds else programs["c"]
        floors = {w: floor_time(mixed, w, args.round_trips) for w in WIDTHS}
        results["floor"] = {"c_4_ms": 1e3 * floor_time(programs["c"], 4, args.round_trips),
                            "py_4_ms": 1e3 * floor_time(programs["py"], 4, args.round_trips)}
        print(f"floor: {results['floor']}", file=sys.stderr, flush=True)
        for kind in ("xs", "spawn", "mpi"):
            if kind in args.only:
                results[kind] = run_parsl(kind, programs, mixed, floors, args, workdir)
                print(f"{kind}: {results[kind]}", file=sys.stderr, flush=True)
    print(f"{'way':<8} {'C 4-rank ms':>12} {'Py 4-rank ms':>13} {'no-op 4-rank ms':>16} "
          f"{'mixed tasks/s':>14} {'utilisation':>12}")
    for kind, r in results.items():
        mixed = f"{r['mixed_tasks_per_s']:.1f}" if "mixed_tasks_per_s" in r else "-"
        util = f"{100 * r['mixed_utilisation']:.0f} %" if "mixed_utilisation" in r else "-"
        noop = f"{r['noop_4_ms']:.1f}" if "noop_4_ms" in r else "-"
        print(f"{kind:<8} {r['c_4_ms']:>12.0f} {r['py_4_ms']:>13.0f} {noop:>16} {mixed:>14} "
              f"{util:>12}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
