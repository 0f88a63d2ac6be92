"""Where a ``rankpool.Executor``'s CPU goes: the processes of its path (front-end, interchange,
every pool rank, the ranks' keepers) and the CPU time each spends per task during a run.

Imports nothing from rankpool, so that ``bench/builds.py`` can use it on any build."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psutil


def executor_processes(ex: Any) -> dict[str, Any]:
    """psutil handles of an Executor's processes: front-end, interchange, the pool's ranks and,
    as one list, their keepers (a keeper is the Python parent of its rank;
    ``RANKPOOL_NO_KEEPER=1`` has none)."""
    python = [c for p in ex._blocks.procs.values()
              for c in psutil.Process(p.pid).children(recursive=True) if "python" in c.name()]
    parents = {c.ppid() for c in python}
    keepers = sorted((c for c in python if c.pid in parents), key=lambda p: p.pid)
    ranks = sorted((c for c in python if c.pid not in parents), key=_rank_of)
    procs: dict[str, Any] = {"front-end": psutil.Process(),
                             "interchange": psutil.Process(ex.client.proc.pid)}
    procs.update({f"pool rank {i}": p for i, p in enumerate(ranks)})
    if keepers:
        procs["keepers"] = keepers
    return procs


def _rank_of(p: Any) -> tuple[int, int]:
    """A pool process's MPI rank as its launcher numbered it (MPICH's ``PMI_RANK``, Open
    MPI's ``OMPI_COMM_WORLD_RANK``, Slurm's ``SLURM_PROCID``), then its pid: ranks do not start
    in pid order."""
    try:
        env = p.environ()
    except psutil.Error:
        env = {}
    for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID"):
        if env.get(name, "").isdigit():
            return int(env[name]), p.pid
    return 1 << 30, p.pid


def _cpu(p: Any) -> float:
    return sum(sum(x.cpu_times()[:2]) for x in (p if isinstance(p, list) else [p]))


def cpu_per_task(ex: Any, run: Callable[[int], Any], n: int) -> dict[str, float]:
    """CPU time each of ``ex``'s processes spends per task while ``run(n)`` runs ``n`` tasks,
    in µs."""
    procs = executor_processes(ex)
    before = {k: _cpu(p) for k, p in procs.items()}
    run(n)
    return {k: (_cpu(p) - before[k]) / n * 1e6 for k, p in procs.items()}
