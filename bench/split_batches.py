"""The interchange's own work on a task batch that it splits over pools, per build, in one
process with nothing else running in it: CPU time the code takes, not what the machine's
other processes leave it.

    python bench/split_batches.py --build before=/path/to/old/src --build now=src \\
        [--tasks 1024] [--run 128] [--rounds 5] [--json out.json]

For each build, in a child process of its own (the builds interleaved round by round), a
pre-encoded batch of ``--tasks`` no-op tasks (the batches ``bench/scale_sim.py``'s front-end
sends) is decoded as the interchange decodes it, then made into the messages that carry it
to pools in runs of ``--run`` tasks (128 is what each of 10,000 pools takes in a flood): by
``routing.Routing._messages`` where the build has it (slices of the batch), else by
``encode_tasks`` per run (a build that encodes every run anew). ``whole`` is the same batch
taken by one pool (sent on as it came, in either build). Figures are µs per task, the best of
7 timings of each round, then the median over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import timeit
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from builds import parse_build  # noqa: E402


def measure(tasks: int, run: int) -> dict[str, float]:
    """µs per task of decode, decode + split into runs, and decode + the whole batch."""
    from sim_front import _tasks

    from rankpool.protocol import batches
    from rankpool.protocol.wire import decode_header
    frames = [bytes(f) for f in batches.encode_tasks(_tasks(0, tasks))]
    header, body = decode_header(frames[0]), frames[1:]
    try:
        from rankpool.protocol.task_slices import sliced
    except ImportError:  # a build that encodes every run anew and forwards a whole batch
        from rankpool.interchange.routing import _forwarded  # type: ignore[attr-defined]

        def decode() -> list[Any]:
            return batches.decode_tasks(header, body)

        def messages(part: list[Any]) -> Any:
            return batches.encode_tasks(part)

        def whole() -> None:
            decoded = decode()
            assert _forwarded((decoded, frames), decoded) is frames
    else:
        if hasattr(batches, "receive_tasks"):  # a build that queues runs, not tasks
            from rankpool.protocol.task_slices import runs_of

            def decode() -> list[Any]:
                return runs_of(batches.receive_tasks(header, body, frames))
        else:  # a build that decodes every task, keeping its batch
            def decode() -> list[Any]:
                return batches.decode_tasks(header, body, message=frames)  # type: ignore[call-arg]

        def messages(part: list[Any]) -> Any:
            return sliced(part, 4)

        def whole() -> None:
            assert messages(decode())[0][1] is frames

    def split() -> None:
        decoded = decode()
        if len(decoded) == 1 and hasattr(decoded[0], "take"):  # one run: cut it as pools do
            whole_run = decoded[0]
            while whole_run.ids:
                messages([whole_run.take(run)])
            return
        for i in range(0, tasks, run):
            messages(decoded[i:i + run])

    out = {}
    for name, fn in (("decode", decode), ("split", split), ("whole", whole)):
        number = max(1, 200_000 // tasks)
        best = min(timeit.repeat(fn, number=number, repeat=7))
        out[name] = best / number / tasks * 1e6
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", action="append", default=[], type=parse_build, metavar="LABEL=SRC")
    p.add_argument("--tasks", type=int, default=1024)
    p.add_argument("--run", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.tasks, args.run)))
        return 0
    builds = [(label, src) for label, src, _ in args.build]
    if not builds or not all(src.is_dir() for _, src in builds):
        p.error("name each build as LABEL=SRC, SRC a source folder")
    rows: dict[str, list[dict[str, float]]] = {label: [] for label, _ in builds}
    for _ in range(args.rounds):
        for label, src in builds:
            env = dict(os.environ, PYTHONPATH=str(src))
            out = subprocess.run([sys.executable, __file__, "--child", "--tasks",
                                  str(args.tasks), "--run", str(args.run)],
                                 env=env, capture_output=True, text=True, check=True)
            rows[label].append(json.loads(out.stdout))
    print(f"µs per task, {args.tasks}-task batch, runs of {args.run}, median of "
          f"{args.rounds} rounds\n")
    print("| build | decode | decode + split into runs | decode + whole batch |")
    print("|---|---:|---:|---:|")
    medians = {}
    for label, runs in rows.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        medians[label] = med
        print(f"| {label} | {med['decode']:.3f} | {med['split']:.3f} | {med['whole']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": rows, "medians": medians}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
