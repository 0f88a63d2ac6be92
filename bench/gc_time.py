"""Where the garbage collector's time goes during a flood: every process of a
``rankpool.Executor(max_ranks=2)`` (front-end, interchange, pool ranks) records its collections
and the seconds they took (``gc.callbacks``, through ``tests/gc_probe``) while the front-end
runs ``--floods`` floods of ``--tasks`` no-op tasks after a warm-up; one child process per
build, the builds one after the other, ``--rounds`` times:

    python bench/gc_time.py --build before=/path/to/old/src --build now=src [--rounds 2]

A build is ``LABEL=SRC``. The table gives, per process, the collections of each generation
and the milliseconds they took (median of rounds), which count the warm-up and start-up too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROBE = HERE.parent / "tests" / "gc_probe"


def noop() -> None:
    return None


def child(tasks: int, floods: int) -> None:
    from rankpool import Executor
    with Executor(max_ranks=2) as ex:
        for f in [ex.submit(noop) for _ in range(2000)]:
            f.result(timeout=60)
        t0 = time.perf_counter()
        for _ in range(floods):
            for f in [ex.submit(noop) for _ in range(tasks)]:
                f.result(timeout=300)
        print(json.dumps({"tasks_per_s": tasks * floods / (time.perf_counter() - t0)}))


def run(src: Path, tasks: int, floods: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gc-time-") as seen:
        env = {**os.environ, "RANKPOOL_TEST_GC_PROBE": seen,
               "PYTHONPATH": os.pathsep.join([str(PROBE), str(HERE), str(src)])}
        proc = subprocess.run([sys.executable, __file__, "--child", str(tasks), str(floods)],
                              env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip().splitlines()[-1:])
        out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        time.sleep(1.0)  # the pool's processes write as they exit
        for path in Path(seen).iterdir():
            role, threshold, frozen, runs, seconds = path.read_text().strip().split("|")
            if role == "other" and int(runs.split()[0]) < 10:
                continue  # a helper process (a keeper; the probe's own interpreter)
            name = "front-end" if role == "other" else role
            out[name] = {"runs": [int(x) for x in runs.split()], "ms": float(seconds) * 1e3,
                         "threshold": threshold, "frozen": int(frozen)}
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", action="append", default=[], help="LABEL=SRC")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--tasks", type=int, default=20_000, help="no-op tasks per flood")
    p.add_argument("--floods", type=int, default=5)
    p.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    q = p.parse_args(argv)
    if q.child:
        child(*q.child)
        return 0
    parts = [b.partition("=") for b in q.build]
    if not parts or not all(label and src and Path(src).is_dir() for label, _, src in parts):
        p.error("name each build as LABEL=SRC, SRC a source folder")
    builds = [(label, Path(src).resolve()) for label, _, src in parts]
    rows: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in builds}
    for r in range(q.rounds):
        for label, src in builds:
            rows[label].append(run(src, q.tasks, q.floods))
            print(f"round {r + 1} {label}: {rows[label][-1]}", file=sys.stderr)
    print(f"Collections (generations 0 / 1 / 2) and their ms during {q.floods} floods of "
          f"{q.tasks:,} no-op tasks, median of {q.rounds} rounds:\n")
    print("| build | process | collections | ms | thresholds | objects frozen | tasks/s |")
    print("|---|---|---|---:|---|---:|---:|")
    for label, results in rows.items():
        names = sorted({k for x in results for k in x if k != "tasks_per_s"})
        rate = statistics.median(x["tasks_per_s"] for x in results)
        for name in names:
            got = [x[name] for x in results if name in x]
            runs = [statistics.median(g["runs"][i] for g in got) for i in range(3)]
            ms = statistics.median(g["ms"] for g in got)
            print(f"| {label} | {name} | {' / '.join(f'{n:.0f}' for n in runs)} | {ms:.0f} "
                  f"| {got[0]['threshold']} | {got[0]['frozen']:,} | {rate:,.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
