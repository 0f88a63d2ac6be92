"""``map`` with ``chunksize``: items per second of a no-op ``map`` over many items, for
``rankpool.Executor``, ``ProcessPoolExecutor`` and mpi4py's ``MPIPoolExecutor``, each with
every chunk size of ``--chunks`` and reported at its best, all with 2 workers, in one run.

    python bench/map_chunks.py [--items 1000000] [--chunks 1000 10000 50000] [--json OUT]

Each system runs in a fresh interpreter (``mpi4py.futures`` spawns its workers), one after
the other, ``--rounds`` times interleaved; the table gives the median of the rounds for each
chunk size and the ratios of rankpool's best to each peer's best.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORKERS = 2


def nothing(x: int) -> None:
    return None


def executor(name: str) -> AbstractContextManager[Any]:
    if name == "rankpool.Executor":
        from rankpool import Executor
        return Executor(max_ranks=WORKERS)
    if name == "ProcessPoolExecutor":
        from concurrent.futures import ProcessPoolExecutor
        return ProcessPoolExecutor(WORKERS)
    from mpi4py.futures import MPIPoolExecutor
    return MPIPoolExecutor(max_workers=WORKERS)


def child(name: str, items: int, chunks: list[int]) -> dict[str, float]:
    from map_chunks import nothing as fn  # by reference: the workers import this module
    out = {}
    with executor(name) as ex:
        for _ in ex.map(fn, range(1000), chunksize=100):  # start-up and warm-up
            pass
        for k in chunks:
            t = time.perf_counter()
            count = sum(1 for _ in ex.map(fn, range(items), chunksize=k))
            assert count == items
            out[str(k)] = items / (time.perf_counter() - t)
    return out


SYSTEMS = ("rankpool.Executor", "ProcessPoolExecutor", "mpi4py.futures")


def run(name: str, items: int, chunks: list[int]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(HERE), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, __file__, "--child", name, "--items", str(items), "--chunks",
           *map(str, chunks)]
    if name == "mpi4py.futures":
        from rankpool.launchers.mpiexec import find_mpiexec
        cmd = [find_mpiexec(), "-n", "1", *cmd]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800,
                          check=False)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--chunks", type=int, nargs="+", default=[1000, 10000, 50000])
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, default=None)
    q = p.parse_args(argv)
    if q.child:
        print(json.dumps(child(q.child, q.items, q.chunks)))
        return 0
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in SYSTEMS}
    for _ in range(q.rounds):
        for name in SYSTEMS:
            rows[name].append(run(name, q.items, q.chunks))
            print(f"{name}: {rows[name][-1]}", file=sys.stderr, flush=True)
    best: dict[str, float] = {}
    print(f"no-op map over {q.items:,} items, {WORKERS} workers, items/s (median of "
          f"{q.rounds} rounds)\n")
    print("| system | " + " | ".join(f"chunksize {k:,}" for k in q.chunks) + " | best |")
    print("|---|" + "---:|" * (len(q.chunks) + 1))
    for name, results in rows.items():
        failed = [r["error"] for r in results if "error" in r]
        if failed:
            print(f"| {name} | error: {failed[0]} |" + " |" * len(q.chunks))
            continue
        cells = [statistics.median(r[str(k)] for r in results) for k in q.chunks]
        best[name] = max(cells)
        print(f"| {name} | " + " | ".join(f"{c:,.0f}" for c in cells) + f" | {best[name]:,.0f} |")
    ours = best.get("rankpool.Executor")
    if ours:
        print()
        for name, theirs in best.items():
            if name != "rankpool.Executor":
                print(f"- rankpool.Executor's best ÷ {name}'s best: {ours / theirs:.1f}× "
                      f"(target ≥ 5× the better peer)")
    if q.json:
        q.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
