"""A pool's rank 0 alone, per build: the CPU time its own code takes per no-op task, with no
ZeroMQ, interchange or front-end beside it.

    python bench/rank0_alone.py --build before=/path/to/old/src --build now=src \\
        [--batches 300] [--rounds 5] [--json out.json]

For each build (the builds interleaved round by round), ``mpiexec -n 3`` runs a ``Manager``
on rank 0 and two real ``Worker`` ranks. Rank 0 takes pre-encoded 1,024-task batches as a
pool takes them from the interchange (``decode_tasks`` with ``copy=True``), queues them, sends
them to the ranks, takes their reports and encodes the results, keeping about two batches in
flight as a flood does. Rank 0 is bound to core 0 and the workers share core 1
(``-bind-to user:0,1,1``): rank 0 is then the slowest stage and its CPU time is its work, not
what two other processes on its core left it. Figures are rank 0's CPU µs per task (user and
system), each round's, then the median.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from builds import parse_build  # noqa: E402

BATCH = 1024


def rank_0(batches: int) -> float:
    """Run as rank 0 (the other ranks serve as workers); rank 0's CPU µs per task."""
    import resource

    from mpi4py import MPI

    from rankpool.collector import settle_for_service
    from rankpool.mpi_pool.manager import Manager
    from rankpool.mpi_pool.subcomms import Topology
    from rankpool.mpi_pool.worker import Worker
    from rankpool.protocol import batches as wire_batches
    from rankpool.protocol import wire
    from rankpool.protocol.batches import Task
    from rankpool.task.resources import Spec
    from rankpool.task.serialize import FunctionPickler, dumps_data

    comm = MPI.COMM_WORLD
    settle_for_service()
    if comm.Get_rank():
        Worker(comm).serve()
        return 0.0
    from builds import noop
    digest, fn = FunctionPickler().dumps(noop)
    data, _ = dumps_data(((), {}))
    spec = Spec()
    messages = [[bytes(f) for f in wire_batches.encode_tasks(
        [Task(m * BATCH + i + 1, spec, digest, fn, data, ()) for i in range(BATCH)])]
        for m in range(batches)]
    size = comm.Get_size()
    manager = Manager(comm, Topology([list(range(1, size))], ["host"],
                                     dict.fromkeys(range(size), "host")))
    submit = getattr(manager, "submit_many", None)  # builds before it submit one by one
    done = sent = 0

    def take() -> int:
        values, results = manager.take_completed()
        wire_batches.encode_results(results, values)
        return len(values) + len(results)

    before = resource.getrusage(resource.RUSAGE_SELF)
    for frames in messages:
        tasks = wire_batches.decode_tasks(wire.decode_header(frames[0]), frames[1:], copy=True)
        if submit is not None:
            submit(tasks)
        else:
            for task in tasks:
                manager.submit(task)
        manager.manager_dispatch()
        sent += len(tasks)
        while sent - done > 2 * BATCH:
            manager.progress()
            if manager.completed_count >= 256:
                done += take()
    while done < sent:
        manager.progress()
        if manager.completed_count:
            done += take()
    after = resource.getrusage(resource.RUSAGE_SELF)
    manager.manager_stop()
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return cpu / sent * 1e6


def run(src: Path, batches: int) -> float | str:
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or "mpiexec"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(src)])}
    proc = subprocess.run([mpiexec, "-bind-to", "user:0,1,1", "-n", "3", sys.executable,
                           __file__, "--child", str(batches)],
                          env=env, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return "error: " + ((proc.stderr.strip().splitlines() or ["?"])[-1])
    return float(json.loads(lines[-1])["rank0_cpu_us"])


def table(got: dict[str, list[Any]]) -> str:
    """Every build's rounds (a failed round shows its error) and their median."""
    lines = ["| build | rank 0 CPU µs per task, per round | median |", "|---|---|---:|"]
    for label, values in got.items():
        ok = [v for v in values if isinstance(v, float)]
        median = f"{statistics.median(ok):.2f}" if ok else "-"
        shown = ", ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in values)
        lines.append(f"| {label} | {shown} | {median} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", type=parse_build, action="append", default=[])
    p.add_argument("--batches", type=int, default=300, help="1,024-task batches per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        us = rank_0(args.child)
        if us:
            print(json.dumps({"rank0_cpu_us": us}), flush=True)
        return 0
    builds = args.build or [parse_build(f"now={HERE.parent / 'src'}")]
    got: dict[str, list[Any]] = {label: [] for label, _, _ in builds}
    for r in range(args.rounds):
        for label, src, _ in builds:
            got[label].append(run(src, args.batches))
            print(f"round {r + 1} {label}: {got[label][-1]}", file=sys.stderr, flush=True)
    print(table(got))
    if args.json:
        args.json.write_text(json.dumps(got, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
