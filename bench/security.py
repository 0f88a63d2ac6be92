"""What security costs: the secured default against the unauthenticated path, side by side.

    python bench/security.py [--tasks 20000] [--rounds 3] [--json OUT]

For ``rankpool.Executor`` and ``ExtremeScaleExecutor`` (its executor interface, local block),
one executor with the defaults (CurveZMQ on every socket, loopback included; message caps;
private run directory) and one with ``encrypted=False`` run at the same time in this process;
their measurements alternate (secured, plain, secured, plain, ...), so both see the same load
on a busy machine. No-op throughput: all tasks submitted, then all awaited, the median of
``--rounds``; round trip: the median of 300 sequential submit + result per round, the median
of those. Targets: throughput loss under 10 %, secured round trip at most 1 ms. Before them,
the CPU time one link costs per message there and back, with and without CurveZMQ
(``--hops``), which a busy machine does not blur as it blurs wall-clock rates.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# the pools unpickle noop by reference: they import it from here too
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p)
from executor import noop, round_trip, throughput  # noqa: E402

Submit = Callable[..., Any]


@contextmanager
def executor(workers: int, encrypted: bool | None) -> Iterator[Submit]:
    from rankpool import Executor
    with Executor(max_ranks=workers, encrypted=encrypted,
                  run_dir=tempfile.mkdtemp(prefix="bench-security-")) as ex:
        yield ex.submit


@contextmanager
def extreme_scale(workers: int, encrypted: bool | None) -> Iterator[Submit]:
    from rankpool import ExtremeScaleExecutor
    from rankpool.frontends.parsl.executor import local_provider
    ex = ExtremeScaleExecutor(label=f"xs-{encrypted}", encrypted=encrypted,
                              ranks_per_node=workers + 1,
                              provider=local_provider(init_blocks=1, min_blocks=1, max_blocks=1))
    ex.run_dir = tempfile.mkdtemp(prefix="bench-security-")
    ex.run_id = "bench"
    ex.provider.script_dir = ex.run_dir
    ex.start()
    try:
        yield lambda fn, *args: ex.submit(fn, {}, *args)
    finally:
        ex.shutdown()


def hop_cost(size: int, curve: bool, n: int) -> float:
    """CPU microseconds (all threads of this process: ZeroMQ's I/O threads included) per
    message of ``size`` bytes sent DEALER → ROUTER over loopback TCP and answered back: two
    hops, as a task and its result cross one link. CPU time, not wall time, so that a busy
    machine does not hide the difference."""
    import time

    import zmq
    ctx = zmq.Context()
    server, client = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    if curve:
        server_public, server_secret = zmq.curve_keypair()
        server.curve_server, server.curve_secretkey = True, server_secret
        client.curve_publickey, client.curve_secretkey = zmq.curve_keypair()
        client.curve_serverkey = server_public
    port = server.bind_to_random_port("tcp://127.0.0.1")
    client.connect(f"tcp://127.0.0.1:{port}")
    payload = bytes(size)
    for _ in range(100):  # connect, handshake, warm up
        client.send(payload)
        ident, msg = server.recv_multipart()
        server.send_multipart([ident, msg])
        client.recv()
    t = time.process_time()
    for _ in range(n):
        client.send(payload, copy=size < 65536)
        ident, msg = server.recv_multipart(copy=False)
        server.send_multipart([ident, msg], copy=False)
        client.recv(copy=False)
    cost = (time.process_time() - t) / n * 1e6
    ctx.destroy(linger=0)
    return cost


def hop_costs(n: int) -> dict[str, Any]:
    """:func:`hop_cost` for a lone task's size, a 64-task batch's and a 1 MiB buffer's."""
    out: dict[str, Any] = {}
    for size in (200, 64 * 200, 1 << 20):
        count = n if size < 65536 else max(200, n // 20)
        plain = statistics.median(hop_cost(size, False, count) for _ in range(3))
        curve = statistics.median(hop_cost(size, True, count) for _ in range(3))
        out[str(size)] = {"plain_us": plain, "curve_us": curve, "added_us": curve - plain}
        print(f"  a message of {size} bytes there and back: {plain:.1f} us CPU plain, "
              f"{curve:.1f} us with CurveZMQ (+{curve - plain:.1f} us)", file=sys.stderr,
              flush=True)
    return out


FRONT_ENDS = {"rankpool.Executor": executor, "ExtremeScaleExecutor": extreme_scale}
MODES = {"secured (default)": None, "encrypted=False": False}


def compare(name: str, factory: Any, workers: int, tasks: int, rounds: int) -> dict[str, Any]:
    with ExitStack() as stack:
        submits = {mode: functools.partial(stack.enter_context(factory(workers, enc)), noop)
                   for mode, enc in MODES.items()}
        for submit in submits.values():
            submit().result(timeout=120)
            throughput(submit, min(2000, tasks))  # warm-up
        rates: dict[str, list[float]] = {m: [] for m in MODES}
        rtts: dict[str, list[float]] = {m: [] for m in MODES}
        for _ in range(rounds):
            for mode, submit in submits.items():
                rates[mode].append(throughput(submit, tasks))
                rtts[mode].append(round_trip(submit))
    out = {mode: {"tasks_per_s": statistics.median(rates[mode]),
                  "rtt_ms": statistics.median(rtts[mode]),
                  "rounds_tasks_per_s": rates[mode], "rounds_rtt_ms": rtts[mode]}
           for mode in MODES}
    secured, plain = out["secured (default)"], out["encrypted=False"]
    out["throughput_loss_pct"] = 100 * (1 - secured["tasks_per_s"] / plain["tasks_per_s"])
    for mode in MODES:
        print(f"  {name}, {mode}: {out[mode]['tasks_per_s']:,.0f} tasks/s, round trip "
              f"{out[mode]['rtt_ms']:.3f} ms", file=sys.stderr, flush=True)
    print(f"  {name}: throughput loss {out['throughput_loss_pct']:.1f} % (target < 10 %), "
          f"secured round trip {secured['rtt_ms']:.3f} ms (target <= 1 ms)", file=sys.stderr,
          flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=sorted(FRONT_ENDS), default=None)
    parser.add_argument("--hops", type=int, default=20_000,
                        help="messages per CPU-cost measurement of one link (0: skip)")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    logging.getLogger("rankpool").setLevel(logging.ERROR)  # the opt-out's warning, once known
    hops = hop_costs(args.hops) if args.hops else {}
    results = {name: compare(name, factory, args.workers, args.tasks, args.rounds)
               for name, factory in FRONT_ENDS.items() if not args.only or name in args.only}
    text = json.dumps({"workers": args.workers, "tasks": args.tasks, "rounds": args.rounds,
                       "load_average": os.getloadavg(), "cpus": os.cpu_count(),
                       "hop_cpu_us": hops, "results": results}, indent=1)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
