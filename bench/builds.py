"""Two or more rankpool builds side by side: ``rankpool.Executor``'s no-op throughput and one
task's round trip, each build in a child process of its own, the builds interleaved round by
round so that a busy spell of the machine falls on all of them; ``ProcessPoolExecutor``'s round
trip is measured in every round as the anchor the ratios are given against. Also the CPU time
each process of the path (front-end, interchange, every rank, the keepers) spends per no-op
task during one more throughput run.

    python bench/builds.py --build before=/path/to/old/src --build after=src \\
        [--build plain=src:encrypted=False] [--rounds 3] [--tasks 10000] [--json out.json]
    python bench/builds.py --wide --build ...      # 1-, 2- and 4-rank Barrier round trips
    python bench/builds.py --apps --build ...      # a 4-rank C run_mpi task against the floor
    python bench/builds.py --arrays --build ...    # 1 MB and 64 MB NumPy echo round trips
    python bench/builds.py --mixed --build ...     # where the mixed workload's rank time goes
    python bench/builds.py --flood --build ...     # 2,000 tasks with a 1 MB argument at once
    python bench/builds.py --args --build ...      # floods of tasks with 20 B-2 KB arguments

A build is ``LABEL=SRC`` with optional ``:KEY=VALUE,...`` keyword arguments for ``Executor``
(values are Python literals). The tables give every round, then the medians and the ratios.
What each build's child process measures is in ``build_measures.py``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from build_measures import ARRAYS, FLOOD_BYTES, FLOOD_TASKS, IN_FLIGHT, child  # noqa: E402


def parse_build(text: str) -> tuple[str, Path, dict[str, Any]]:
    label, _, rest = text.partition("=")
    src, _, opts = rest.partition(":")
    if not label or not src:
        raise argparse.ArgumentTypeError(f"a build is LABEL=SRC[:KEY=VALUE,...], not {text!r}")
    kwargs = {}
    for item in filter(None, opts.split(",")):
        key, _, value = item.partition("=")
        kwargs[key] = ast.literal_eval(value)
    return label, Path(src).resolve(), kwargs


def run(src: Path | None, kwargs: dict[str, Any], tasks: int) -> dict[str, Any]:
    paths = [str(HERE)] + ([str(src)] if src else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    proc = subprocess.run([sys.executable, __file__, "--child", str(tasks), json.dumps(kwargs)],
                          env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", type=parse_build, action="append", default=[])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tasks", type=int, default=10000, help="no-op tasks per throughput run")
    p.add_argument("--wide", action="store_true",
                   help="round trips of 1-, 2- and 4-rank Barrier tasks instead")
    p.add_argument("--apps", action="store_true",
                   help="a 4-rank C run_mpi task against a bare mpiexec instead")
    p.add_argument("--arrays", action="store_true",
                   help="1 MB and 64 MB NumPy echo round trips instead")
    p.add_argument("--mixed", action="store_true",
                   help="where the mixed workload's rank-seconds go instead")
    p.add_argument("--flood", action="store_true",
                   help="2,000 tasks with a 1 MB argument each at once instead")
    p.add_argument("--args", action="store_true",
                   help="floods of tasks with small arguments (20 B to 2 KB) instead")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    q = p.parse_args(argv)
    if q.child:
        print(json.dumps(child(int(q.child[0]), json.loads(q.child[1]))))
        return 0
    if not q.build:
        p.error("name at least one --build")
    if q.wide:
        return report_wide(q)
    if q.apps:
        return report_apps(q)
    if q.arrays:
        return report_arrays(q)
    if q.mixed:
        return report_mixed(q)
    if q.flood:
        return report_flood(q)
    if q.args:
        return report_args(q)
    rows = run_rounds(q, {}, anchor=True)
    anchor = statistics.median(x["round_trip_ms"] for x in rows["ProcessPoolExecutor"])
    print("| build | tasks/s per round | median | round trip ms per round | median "
          "| ÷ ProcessPoolExecutor's round trip |")
    print("|---|---|---:|---|---:|---:|")
    for label, results in ok_rows(rows, 6):
        rates = [x.get("noop_tasks_per_s") for x in results]
        trips = [x["round_trip_ms"] for x in results]
        rate = statistics.median(rates) if rates[0] is not None else None
        trip = statistics.median(trips)
        print(f"| {label} | {', '.join(f'{x:,.0f}' for x in rates if x) or '-'} "
              f"| {f'{rate:,.0f}' if rate else '-'} | {', '.join(f'{x:.2f}' for x in trips)} "
              f"| {trip:.2f} | {trip / anchor:.2f} |")
    print("\nCPU per no-op task by process, µs (median of rounds):\n")
    names: list[str] = []
    for results in rows.values():
        for x in results:
            names += [k for k in x.get("cpu_us", {}) if k not in names]
    print("| build | " + " | ".join(names) + " | total |")
    print("|---|" + "---:|" * (len(names) + 1))
    for label, results in rows.items():
        cpus = [x["cpu_us"] for x in results if "cpu_us" in x]
        if not cpus:
            continue
        per = [statistics.median(c.get(k, 0.0) for c in cpus) for k in names]
        total = statistics.median(sum(c.values()) for c in cpus)
        print(f"| {label} | " + " | ".join(f"{v:.1f}" for v in per) + f" | {total:.1f} |")
    if q.json:
        q.json.write_text(json.dumps(rows, indent=1))
    return 0


def run_rounds(q: argparse.Namespace, extra: dict[str, Any],
               anchor: bool = False) -> dict[str, list[dict[str, Any]]]:
    """Every build once per round (``extra`` added to its keywords), and the anchor first."""
    rows: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in q.build}
    if anchor:
        rows["ProcessPoolExecutor"] = []
    for r in range(q.rounds):
        if anchor:
            rows["ProcessPoolExecutor"].append(run(None, {"anchor": True}, q.tasks))
        for label, src, kwargs in q.build:
            rows[label].append(run(src, {**kwargs, **extra}, q.tasks))
            print(f"round {r + 1} {label}: {rows[label][-1]}", file=sys.stderr)
    return rows


def ok_rows(rows: dict[str, list[dict[str, Any]]],
            columns: int) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """The builds whose every round ran; a row naming the error for the others."""
    for label, results in rows.items():
        failed = [x["error"] for x in results if "error" in x]
        if failed:
            print(f"| {label} | error: {failed[0]} |" + " |" * (columns - 1))
        else:
            yield label, results


def report_wide(q: argparse.Namespace) -> int:
    rows = run_rounds(q, {"wide": True})
    print("| build | 1-rank round trip ms | 2-rank | 4-rank |")
    print("|---|---:|---:|---:|")
    for label, results in ok_rows(rows, 4):
        cells = [statistics.median(x[f"rtt{k}_ms"] for x in results) for k in (1, 2, 4)]
        print(f"| {label} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    if q.json:
        q.json.write_text(json.dumps(rows, indent=1))
    return 0


def report_arrays(q: argparse.Namespace) -> int:
    rows = run_rounds(q, {"arrays": True})
    print("| build | " + " | ".join(f"{label} ms | {label} GB/s" for label, _, _ in ARRAYS) + " |")
    print("|---|" + "---:|---:|" * len(ARRAYS))
    for label, results in ok_rows(rows, 1 + 2 * len(ARRAYS)):
        cells = []
        for name, _, _ in ARRAYS:
            cells += [f"{statistics.median(x[f'np_{name}_ms'] for x in results):.2f}",
                      f"{statistics.median(x[f'np_{name}_GBps'] for x in results):.2f}"]
        print(f"| {label} | " + " | ".join(cells) + " |")
    if q.json:
        q.json.write_text(json.dumps(rows, indent=1))
    return 0


#: the columns of ``--mixed``'s table: (field of ``build_measures.mixed_losses``, heading)
MIXED_COLUMNS = (("overshoot", "sleep overshoot"), ("barrier", "Barrier waits"),
                 ("before_1", "idle before 1-rank"), ("before_2", "before 2-rank"),
                 ("before_4", "before 4-rank"), ("start", "first start"), ("end", "after last"),
                 ("unused", "unused ranks"), ("lost", "lost"))


def report_mixed(q: argparse.Namespace) -> int:
    rows = run_rounds(q, {"mixed": True})
    print("| build | utilisation % | " + " | ".join(h for _, h in MIXED_COLUMNS) + " |")
    print("|---|---:|" + "---:|" * len(MIXED_COLUMNS))
    for label, results in ok_rows(rows, 2 + len(MIXED_COLUMNS)):
        util = statistics.median(x["utilisation"] for x in results)
        cells = [f"{statistics.median(x[key] for x in results):.3f}" for key, _ in MIXED_COLUMNS]
        print(f"| {label} | {100 * util:.1f} | " + " | ".join(cells) + " |")
    print("\n(rank-seconds, medians; 4 worker ranks; the lost ones add up to `lost`)")
    if q.json:
        q.json.write_text(json.dumps(rows, indent=1))
    return 0


def report_flood(q: argparse.Namespace) -> int:
    rows = run_rounds(q, {"flood": True})
    print("| build | tasks/s per round | median | front-end CPU µs/task | worker ranks CPU "
          "µs/task | arena place + release µs |")
    print("|---|---|---:|---:|---:|---:|")
    for label, results in ok_rows(rows, 6):
        rates = [x["tasks_per_s"] for x in results]
        front = statistics.median(x["cpu_us"]["front-end"] for x in results)
        ranks = statistics.median(sum(v for k, v in x["cpu_us"].items()
                                      if k.startswith("pool rank") and k != "pool rank 0")
                                  for x in results)
        place = statistics.median(x["place_release_us"] for x in results)
        print(f"| {label} | {', '.join(f'{r:,.0f}' for r in rates)} | "
              f"{statistics.median(rates):,.0f} | {front:,.0f} | {ranks:,.0f} | {place:,.0f} |")
    print(f"\n({FLOOD_TASKS:,} tasks of {FLOOD_BYTES >> 20} MiB; place + release with "
          f"{IN_FLIGHT:,} buffers in flight)")
    if q.json:
        q.json.write_text(json.dumps(rows, indent=1))
    return 0


def report_args(q: argparse.Namespace) -> int:
    from build_measures import ARG_SIZES
    rows = run_rounds(q, {"args": True})
    print("| build | " + " | ".join(f"{s:,} B: tasks/s (rank 0 µs/task)" for s in ARG_SIZES)
          + " |")
    print("|---|" + "---:|" * len(ARG_SIZES))
    for label, results in ok_rows(rows, len(ARG_SIZES) + 1):
        cells = []
        for s in map(str, ARG_SIZES):
            rate = statistics.median(x[s]["tasks_per_s"] for x in results)
            rank0 = statistics.median(x[s]["rank0_us"] for x in results)
            cells.append(f"{rate:,.0f} ({rank0:.1f})")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(f"\n(`echo` tasks, {q.tasks:,} per flood; medians of rounds)")
    if q.json:
        q.json.write_text(json.dumps(rows, indent=1))
    return 0


def report_apps(q: argparse.Namespace) -> int:
    import tempfile
    with tempfile.TemporaryDirectory() as workdir:
        program = os.path.join(workdir, "world")
        source = HERE.parent / "tests" / "integration" / "mpi_programs" / "world.c"
        subprocess.run([os.path.join(os.path.dirname(sys.executable), "mpicc"), "-o", program,
                        str(source)], check=True, timeout=120)
        os.environ["RANKPOOL_BENCH_APP"] = program
        rows = run_rounds(q, {"apps": True})
    print("| build | bare mpiexec -n 4 ms | 4-rank run_mpi task ms | task ÷ floor "
          "| pool's wake-ups/s during an application |")
    print("|---|---:|---:|---:|---:|")
    for label, results in ok_rows(rows, 5):
        floor = statistics.median(x["floor_ms"] for x in results)
        task = statistics.median(x["task_ms"] for x in results)
        ratio = statistics.median(x["task_ms"] / x["floor_ms"] for x in results)
        wakes = statistics.median(x["wakes_per_s"] for x in results)
        print(f"| {label} | {floor:.0f} | {task:.0f} | {ratio:.2f} | {wakes:,.0f} |")
    if q.json:
        q.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
