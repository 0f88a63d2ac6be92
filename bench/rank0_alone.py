"""A pool's rank 0 alone, per build: the CPU time its own code takes per no-op task, with no
ZeroMQ, interchange or front-end beside it.

    python bench/rank0_alone.py --build before=/path/to/old/src --build now=src \\
        [--batches 300] [--rounds 5] [--stand-ins] [--json out.json]

For each build (the builds interleaved round by round), ``mpiexec -n 3`` runs a ``Manager``
on rank 0 and two real ``Worker`` ranks. Rank 0 takes pre-encoded 1,024-task batches as a
pool takes them from the interchange (``decode_tasks`` with ``copy=True``), queues them, sends
them to the ranks, takes their reports and encodes the results, keeping about two batches in
flight as a flood does. Rank 0 is bound to core 0 and the workers share core 1
(``-bind-to user:0,1,1``): rank 0 is then the slowest stage and its CPU time is its work, not
what two other processes on its core left it. Figures are rank 0's CPU µs per task (user and
system), each round's, then the median.

``--stand-ins`` takes the same steps in one process with the MPI hops replaced by stand-ins
(the WORK messages are kept, and each comes back at once as the report its ranks would send,
pickled and unpickled as it travels): the CPU of rank 0's own steps alone, without what
messages, wake-ups and the other processes cost it. Figures are µs per task of each step
(decode, queue, dispatch, reports, result batch) and their total, best of the rounds.
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


def _encode_results() -> Any:
    """``encode_results`` of the build on the path (in ``protocol.result_batches`` since round
    12, in ``protocol.batches`` before)."""
    try:
        from rankpool.protocol.result_batches import encode_results
    except ImportError:
        from rankpool.protocol.batches import encode_results  # type: ignore[attr-defined,no-redef]
    return encode_results


def _messages(batches: int) -> list[list[bytes]]:
    """``batches`` task batches of ``BATCH`` no-op tasks, as the interchange sends them."""
    from suite_tasks import noop

    from rankpool.protocol import batches as wire_batches
    from rankpool.protocol.batches import Task
    from rankpool.task.resources import Spec
    from rankpool.task.serialize import FunctionPickler, dumps_data
    digest, fn = FunctionPickler().dumps(noop)
    data, _ = dumps_data(((), {}))
    spec = Spec()
    return [[bytes(f) for f in wire_batches.encode_tasks(
        [Task(m * BATCH + i + 1, spec, digest, fn, data, ()) for i in range(BATCH)])]
        for m in range(batches)]


def _manager(comm: Any, workers: int) -> Any:
    from rankpool.mpi_pool.manager import Manager
    from rankpool.mpi_pool.subcomms import Topology
    ranks = workers + 1
    return Manager(comm, Topology([list(range(1, ranks))], ["host"],
                                  dict.fromkeys(range(ranks), "host")))


def _submit(manager: Any, tasks: list[Any]) -> None:
    submit_many = getattr(manager, "submit_many", None)  # builds before it: one by one
    if submit_many is not None:
        submit_many(tasks)
    else:
        for task in tasks:
            manager.submit(task)


def rank_0(batches: int) -> float:
    """Run as rank 0 (the other ranks serve as workers); rank 0's CPU µs per task."""
    import resource

    from mpi4py import MPI

    from rankpool.collector import settle_for_service
    from rankpool.mpi_pool.worker import Worker
    from rankpool.protocol import batches as wire_batches
    from rankpool.protocol import wire

    encode_results = _encode_results()
    comm = MPI.COMM_WORLD
    try:  # MPICH's file in /dev/shm unlinked once every rank has it, as a pool does
        from rankpool.mpi_pool.mpich_files import release
        release(comm)
    except ImportError:  # a build from before it
        pass
    settle_for_service()
    if comm.Get_rank():
        Worker(comm).serve()
        return 0.0
    messages = _messages(batches)
    manager = _manager(comm, comm.Get_size() - 1)
    done = sent = 0

    def take() -> int:
        values, results = manager.take_completed()
        encode_results(results, values)
        # values: two columns (ids, data) since round 10, a list of (id, data) before it
        plain = values[0] if isinstance(values, tuple) else values
        return len(plain) + len(results)

    before = resource.getrusage(resource.RUSAGE_SELF)
    for frames in messages:
        tasks = wire_batches.decode_tasks(wire.decode_header(frames[0]), frames[1:], copy=True)
        _submit(manager, tasks)
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


STEPS = ("decode", "queue", "dispatch", "reports", "result batch")


class _Outbox:
    """Keeps what rank 0 sends instead of sending it."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, int]] = []
        self.pending: list[Any] = []

    def send(self, obj: Any, dest: int, tag: int, buffers: Any = ()) -> None:
        self.sent.append((obj, dest))

    def poll(self) -> bool:
        return False


def stand_ins(batches: int) -> dict[str, float]:
    """Rank 0's steps in this process, the MPI hops replaced by stand-ins: µs per task of
    each step (the first tenth of the batches warms up)."""
    import pickle
    import time

    from mpi4py import MPI

    from rankpool.collector import settle_for_service
    from rankpool.mpi_pool.subcomms import Done, Report
    from rankpool.protocol import batches as wire_batches
    from rankpool.protocol import wire

    encode_results = _encode_results()
    messages = _messages(batches)
    manager = _manager(MPI.COMM_WORLD, 2)
    manager.outbox = outbox = _Outbox()
    # builds before round 7 name every report entry (their Report.done is a list of Done);
    # from round 9 a rank reports plain values as two columns
    named = "Done" in str(getattr(Report, "__annotations__", {}).get("done", ""))
    columns = len(Report._field_defaults.get("values", ()))  # 3 from round 9: with seconds
    settle_for_service()
    took = dict.fromkeys(STEPS, 0.0)
    warm = batches // 10
    clock = time.process_time
    for m, frames in enumerate(messages):
        spent = dict.fromkeys(STEPS, 0.0)
        t0 = clock()
        tasks = wire_batches.decode_tasks(wire.decode_header(frames[0]), frames[1:], copy=True)
        t1 = clock()
        _submit(manager, tasks)
        spent["decode"], spent["queue"] = t1 - t0, clock() - t1
        while manager.tasks or outbox.sent:
            t0 = clock()
            manager.manager_dispatch()
            spent["dispatch"] += clock() - t0
            sent, outbox.sent = outbox.sent, []
            for items, rank in sent:
                # from round 9 an entry may be a run of tasks: a list of ids in place of the id
                ids = [i for item in items
                       for i in (item[0] if type(item[0]) is list else (item[0],))]
                if columns:  # as if each task ran 4 µs
                    value = b"\x80\x05N."
                    values = (ids, [value] * len(ids), 4e-6 * len(ids))[:columns]
                    report = pickle.dumps(([], (), (), False, values), protocol=5)
                else:
                    report = pickle.dumps(([(i, 0, True, b"\x80\x05N.", 0, 0.0, 0.0)
                                            for i in ids], (), (), False), protocol=5)
                t0 = clock()
                fields = pickle.loads(report)
                if named:
                    fields = ([Done._make(d) for d in fields[0]], *fields[1:])
                manager._take_report(rank, (Report(*fields), []))
                spent["reports"] += clock() - t0
        t0 = clock()
        values, results = manager.take_completed()
        encode_results(results, values)
        spent["result batch"] = clock() - t0
        if m >= warm:
            for step in STEPS:
                took[step] += spent[step]
    n = (batches - warm) * BATCH
    return {step: took[step] / n * 1e6 for step in STEPS}


def run(src: Path, batches: int, stand_ins: bool = False) -> Any:
    """One round of one build in a child process: rank 0's CPU µs per task (a dict of them
    per step with ``stand_ins``), or the error that ended it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(src)])}
    cmd = [sys.executable, __file__, "--child", str(batches)]
    if stand_ins:
        cmd.append("--stand-ins")
    else:
        mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or "mpiexec"
        cmd = [mpiexec, "-bind-to", "user:0,1,1", "-n", "3", *cmd]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return "error: " + ((proc.stderr.strip().splitlines() or ["?"])[-1])
    got = json.loads(lines[-1])
    return got if stand_ins else float(got["rank0_cpu_us"])


def table(got: dict[str, list[Any]]) -> str:
    """Every build's rounds (a failed round shows its error) and their median."""
    lines = ["| build | rank 0 CPU µs per task, per round | median |", "|---|---|---:|"]
    for label, values in got.items():
        ok = [v for v in values if isinstance(v, float)]
        median = f"{statistics.median(ok):.2f}" if ok else "-"
        shown = ", ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in values)
        lines.append(f"| {label} | {shown} | {median} |")
    return "\n".join(lines)


def steps_table(got: dict[str, list[Any]]) -> str:
    """Every build's best round (least in total) of ``--stand-ins``, step by step."""
    lines = ["| build | " + " | ".join(STEPS) + " | total |",
             "|---|" + "---:|" * (len(STEPS) + 1)]
    for label, rounds in got.items():
        ok = [r for r in rounds if isinstance(r, dict)]
        if not ok:
            lines.append(f"| {label} | " + " | ".join("-" for _ in STEPS) + f" | {rounds[-1]} |")
            continue
        best = min(ok, key=lambda r: sum(r.values()))
        lines.append(f"| {label} | " + " | ".join(f"{best[s]:.3f}" for s in STEPS)
                     + f" | {sum(best.values()):.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", type=parse_build, action="append", default=[])
    p.add_argument("--batches", type=int, default=300, help="1,024-task batches per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--stand-ins", action="store_true",
                   help="rank 0's own steps in one process, the MPI hops replaced")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        if args.stand_ins:
            print(json.dumps(stand_ins(args.child)), flush=True)
            return 0
        us = rank_0(args.child)
        if us:
            print(json.dumps({"rank0_cpu_us": us}), flush=True)
        return 0
    builds = args.build or [parse_build(f"now={HERE.parent / 'src'}")]
    got: dict[str, list[Any]] = {label: [] for label, _, _ in builds}
    for r in range(args.rounds):
        for label, src, _ in builds:
            got[label].append(run(src, args.batches, args.stand_ins))
            print(f"round {r + 1} {label}: {got[label][-1]}", file=sys.stderr, flush=True)
    print(steps_table(got) if args.stand_ins else table(got))
    if args.json:
        args.json.write_text(json.dumps(got, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
