"""Load: a million no-op tasks and a hundred thousand multi-rank tasks through one
``rankpool.Executor``, with flat memory and no leaked MPI communicators (issue 6, "Load").

    python bench/load.py [--tasks 1000000] [--wide 100000] [--ranks 4] [--window 2000]
                         [--json OUT] [--quick]

Tasks are submitted as a stream with at most ``--window`` futures outstanding, so the client
holds a bounded number of futures and what grows, if anything, is the engine. The window
also bounds what waits in the interchange's queue, and a queued task costs memory there (its
batch, with the function's payload when tasks arrive one at a time): with slow multi-rank
tasks and a window of 20,000 the interchange's RSS follows its queue (about 100 MB), which
is not growth with the number of tasks run. RSS (psutil) of
the interchange, rank 0 and every worker rank is sampled after a warm-up (the first
``--warmup`` tasks, which fill caches and allocator pools) and at the end; growth is the
difference. Communicators: a probe task on every worker rank counts how many communicators
it can still create (``Comm.Dup`` until MPICH refuses, about 2,048 context ids a process)
before and after the runs; a leak of one communicator per task, or any leak beyond the probe's
width, would lower the count (and 100,000 multi-rank tasks would exhaust MPICH's ids long
before the end).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import psutil

MB = 2**20


def noop() -> None:
    return None


def width_of(comm: Any = None) -> int:
    """A multi-rank no-op: the communicator was built and freed around it; its width."""
    return int(comm.Get_size())


def free_communicators(comm: Any = None, cap: int = 5000) -> int:
    """How many more communicators this rank can create now (MPICH refuses past its ids)."""
    from mpi4py import MPI
    held = []
    try:
        while len(held) < cap:
            held.append(comm.Dup())
    except MPI.Exception:
        pass
    for c in held:
        c.Free()
    return len(held)


# -- processes ------------------------------------------------------------------------------------
def processes(ex: Any) -> dict[str, psutil.Process]:
    """The run's processes by role: ``interchange``, ``rank 0`` (the manager), ``rank N``."""
    roles = {"interchange": psutil.Process(ex.client.proc.pid)}
    for popen in ex._blocks.procs.values():
        for p in psutil.Process(popen.pid).children(recursive=True):
            if "rankpool.mpi_pool" in " ".join(p.cmdline()):
                env = p.environ()
                rank = env.get("PMI_RANK", env.get("OMPI_COMM_WORLD_RANK", "?"))
                roles[f"rank {rank}"] = p
    return dict(sorted(roles.items()))


def rss_mb(procs: dict[str, psutil.Process]) -> dict[str, float]:
    return {role: p.memory_info().rss / MB for role, p in procs.items()}


# -- streaming ------------------------------------------------------------------------------------
def stream(submit: Callable[[int], Any], n: int, window: int, check: Callable[[int, Any], None],
           every: int = 0, on_progress: Callable[[int], None] | None = None) -> float:
    """Submit ``n`` tasks keeping at most ``window`` outstanding; tasks/s. ``check(i, value)``
    sees every result in order; ``on_progress(done)`` runs every ``every`` results."""
    pending: deque[tuple[int, Any]] = deque()
    done = 0
    start = time.perf_counter()

    def settle_one() -> None:
        nonlocal done
        i, f = pending.popleft()
        check(i, f.result(timeout=600))
        done += 1
        if every and on_progress is not None and done % every == 0:
            on_progress(done)

    for i in range(n):
        pending.append((i, submit(i)))
        if len(pending) >= window:
            settle_one()
    while pending:
        settle_one()
    return n / (time.perf_counter() - start)


def widths(n: int, ranks: int, seed: int = 7) -> Iterator[int]:
    """Mixed widths 2..ranks, from a fixed seed."""
    rng = random.Random(seed)
    return (rng.randint(2, ranks) for _ in range(n))


# -- the run --------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    from rankpool import Executor
    out: dict[str, Any] = {"tasks": args.tasks, "wide": args.wide, "ranks": args.ranks,
                           "window": args.window, "warmup": args.warmup}
    with Executor(max_ranks=args.ranks, run_dir=tempfile.mkdtemp(prefix="bench-load-")) as ex:
        full = ex.requirements(num_ranks=args.ranks, results="all")
        out["free_communicators_before"] = full.submit(free_communicators).result(timeout=120)
        procs = processes(ex)
        samples: list[dict[str, float]] = []

        def sampler(phase: str) -> Callable[[int], None]:
            def sample(done: int) -> None:
                samples.append({"phase": phase, "done": done, **rss_mb(procs)})
                print(f"  {done:,} {phase} tasks done; RSS MB " + ", ".join(
                    f"{k} {v:.0f}" for k, v in samples[-1].items() if k not in ("phase", "done")),
                    file=sys.stderr, flush=True)
            return sample

        def none(i: int, value: Any) -> None:
            if value is not None:
                raise AssertionError(f"task {i} returned {value!r}")

        stream(lambda i: ex.submit(noop), args.warmup, args.window, none)
        warm = rss_mb(procs)
        out["noop_tasks_per_s"] = stream(lambda i: ex.submit(noop), args.tasks, args.window,
                                         none, max(1, args.tasks // 10), sampler("no-op"))
        after_noop = rss_mb(procs)

        views = {w: ex.requirements(num_ranks=w) for w in range(2, args.ranks + 1)}
        shape = list(widths(args.wide, args.ranks))

        def right_width(i: int, value: Any) -> None:
            if value != shape[i]:
                raise AssertionError(f"wide task {i} of width {shape[i]} returned {value!r}")

        out["wide_tasks_per_s"] = stream(lambda i: views[shape[i]].submit(width_of), args.wide,
                                         args.window, right_width, max(1, args.wide // 10),
                                         sampler("multi-rank"))
        out["wide_rank_tasks"] = sum(shape)
        end = rss_mb(procs)
        out["free_communicators_after"] = full.submit(free_communicators).result(timeout=120)
        out["rss_mb"] = {"warm": warm, "after_noop": after_noop, "end": end}
        out["rss_growth_mb"] = {role: end[role] - warm[role] for role in warm}
        out["rss_growth_noop_mb"] = {role: after_noop[role] - warm[role] for role in warm}
        out["samples"] = samples
        out["outstanding_at_end"] = ex.outstanding()
    return out


def report(r: dict[str, Any], limit_mb: float = 50.0) -> str:
    lines = [f"{r['tasks']:,} no-op tasks: {r['noop_tasks_per_s']:,.0f} tasks/s; "
             f"{r['wide']:,} multi-rank tasks ({r.get('wide_rank_tasks', 0):,} task ranks): "
             f"{r['wide_tasks_per_s']:,.0f} tasks/s; window {r['window']:,}, "
             f"{r['ranks']} worker ranks",
             "", "| process | RSS after warm-up MB | after no-ops MB | at end MB | growth MB |",
             "|---|---|---|---|---|"]
    rss = r["rss_mb"]
    for role in rss["warm"]:
        lines.append(f"| {role} | {rss['warm'][role]:.1f} | {rss['after_noop'][role]:.1f} | "
                     f"{rss['end'][role]:.1f} | {r['rss_growth_mb'][role]:+.1f} |")
    worst = max(r["rss_growth_mb"].values())
    before, after = r["free_communicators_before"], r["free_communicators_after"]
    lines += ["", f"largest RSS growth after warm-up: {worst:+.1f} MB "
              f"({'under' if worst < limit_mb else 'OVER'} {limit_mb:.0f} MB)",
              f"communicators each worker rank could still create: before {before}, "
              f"after {after} ({'none leaked' if before == after else 'LEAKED'})"]
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000, help="no-op tasks")
    parser.add_argument("--wide", type=int, default=100_000, help="multi-rank tasks")
    parser.add_argument("--ranks", type=int, default=4, help="worker ranks of the block")
    parser.add_argument("--window", type=int, default=2_000, help="most futures outstanding")
    parser.add_argument("--warmup", type=int, default=None,
                        help="no-op tasks before the first RSS sample (default: 5 %% of --tasks)")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--quick", action="store_true", help="20,000 + 2,000 tasks: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.wide = min(args.tasks, 20_000), min(args.wide, 2_000)
    if args.ranks < 2:
        parser.error("--ranks: multi-rank tasks need at least 2 worker ranks")
    if args.warmup is None:
        args.warmup = max(1000, args.tasks // 20)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING)
    result = run(args)
    print(report(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
