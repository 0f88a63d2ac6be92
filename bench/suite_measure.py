"""Measurements shared by every system's case: throughput, round trips, mixed widths."""

from __future__ import annotations

import argparse
import functools
import heapq
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import executor as bench_executor  # noqa: E402  (bench/executor.py)
from suite_tasks import MB, MPI_WORKERS, barrier, echo, mixed_workload, nap, noop  # noqa: E402

from rankpool.mpi_pool.placement.scheduler import DEFAULT_LEND  # noqa: E402


class System:
    """What a case hands the measurements: ``submit(fn, *args)``; ``submit_ranks(k, fn, *args)``
    for multi-rank tasks (None where the system has none)."""

    def __init__(self, submit: Callable[..., Any],
                 submit_ranks: Callable[..., Any] | None = None,
                 nap_fn: Callable[..., Any] = nap,
                 barrier_fn: Callable[..., Any] = barrier) -> None:
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
        ms = bench_executor.round_trip(lambda a=a: system.submit(echo, a), count)
        out[f"np_{label}_ms"] = ms
        out[f"np_{label}_GBps"] = size / (ms / 1e3) / 1e9


def mpi_metrics(system: System, q: argparse.Namespace, out: dict[str, Any]) -> None:
    assert system.submit_ranks is not None
    for k in (2, 4):
        fn = system.barrier_fn
        size = result_of(system.submit_ranks(k, fn))
        if size != k:
            raise RuntimeError(f"a {k}-rank task ran on {size} ranks")
        out[f"rtt{k}_ms"] = bench_executor.round_trip(
            lambda k=k, fn=fn: system.submit_ranks(k, fn), q.mpi_rtt)
    out.update(mixed(system, q))


def schedule_bound(work: list[tuple[int, float]], ranks: int, backfill: bool,
                   lend: int | None = None) -> float:
    """Utilisation of a zero-overhead list schedule of ``work`` on ``ranks`` ranks (one node).

    Without backfill a blocked task stops every later one: on one node this is close to what
    a strict reservation for the first blocked task does when run times are unknown (it
    holds every rank that frees up until it fits). With backfill any later task that fits
    starts (a wide task may starve in a continuous stream). With ``lend`` it is rankpool's
    placement, see :func:`_reservation_bound`.
    """
    if lend is not None:
        return _reservation_bound(work, ranks, lend)
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


def _reservation_bound(work: list[tuple[int, float]], ranks: int, lend: int) -> float:
    """rankpool's placement with zero overhead, one task per rank at a time (no prefetch).

    Later tasks backfill onto idle unreserved ranks; the first blocked task reserves ranks
    (idle ones first, then busy ones running a 1-rank task, then the rest, lowest first:
    run times are unknown); another task may borrow an idle reserved rank while that rank
    has been lent fewer than ``lend`` times during this reservation (0: strict)."""
    t, end, wide = 0.0, [0.0] * ranks, [False] * ranks
    queue = list(range(len(work)))
    owner: int | None = None
    resv: set[int] = set()
    lent = [0] * ranks
    while queue:
        idle = [r for r in range(ranks) if end[r] <= t]
        failed: set[int] = set()
        for i in list(queue):
            k, d = work[i]
            if i != owner and k in failed:
                continue
            free = [r for r in idle if r not in resv]
            spare = [r for r in idle if r in resv and (i == owner or lent[r] < lend)]
            if len(free) + len(spare) < k:
                failed.add(k)
                if owner is None:
                    busy = sorted((r for r in range(ranks) if end[r] > t),
                                  key=lambda r: (wide[r], r))
                    owner, resv, lent = i, set((idle + busy)[:k]), [0] * ranks
                continue
            take = (free + spare)[:k]
            if i == owner:
                owner, resv = None, set()
            for r in take:
                lent[r] += r in resv
                end[r], wide[r] = t + d, k > 1
            idle = [r for r in idle if r not in take]
            queue.remove(i)
        t = min((e for e in end if e > t), default=t)
    return sum(k * d for k, d in work) / (ranks * max(end))


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
            "mixed_bound_backfill": schedule_bound(work, MPI_WORKERS, backfill=True),
            "mixed_bound_lend": schedule_bound(work, MPI_WORKERS, backfill=True, lend=DEFAULT_LEND),
            "mixed_lend": DEFAULT_LEND}


# =============================================================================================
# the cases: each runs in a fresh interpreter and returns a dict of figures
