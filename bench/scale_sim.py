"""Scale by simulation: one interchange, up to 10,000 simulated pools of 128 ranks each.

    python bench/scale_sim.py [--pools 1 100 1000 10000] [--tasks 200000] [--repeat 3]
                              [--rounds 1]
                              [--latency 1000] [--profile] [--quick] [--json OUT]

For every pool count a fresh interchange process (``rankpool.interchange.process.serve``,
the code behind ``python -m rankpool.interchange``, with a timer around its heartbeat step)
gets that many simulated pools over loopback, each with its own DEALER socket and identity,
registered with ``protocol.Register`` as 128 worker ranks. The pools live in a few "pool
host" processes (at most 2,500 sockets each: every zmq socket costs two descriptors) that
answer each task batch at once with a result batch and send heartbeats like a real pool.
A bare front-end in this process (one DEALER, pre-encoded ``protocol.encode_tasks`` batches
of no-op tasks) measures, per pool count:

* throughput: ``--tasks`` tasks in batches of ``--batch``, at most ``--window`` outstanding;
  the interchange's CPU per task (so a 2-core machine's sharing can be read off);
* dispatch latency: ``--latency`` single tasks one after another (median, p99, max);
* the interchange's RSS (resident now, and its peak ``VmHWM``);
* heartbeats: the time the interchange spends in one heartbeat pass (one send per pool), and
  its CPU while idle with every pool heart-beating (the whole keep-alive cost);
* registration: seconds from the first pool host's first connect (the hosts connect all
  their pools at once, after their Python start-up) until the front-end sees every pool
  registered (``register_s``; ``start_s`` counts from starting the host processes, their
  imports included), and the kernel's listen-queue overflows meanwhile (each a handshake TCP
  retries a second or more later).

``--profile`` also samples the interchange with py-spy at the smallest and the largest pool
count, idle and during an extra flood, and prints the functions that dominate.
``RANKPOOL_BENCH_MATCH=path/matching.py`` makes the interchange use that file's ``match()``
(before/after comparisons of a change). The machine here has 2 cores shared with the pool
hosts and the front-end: compare pool counts within one run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psutil
import zmq

from rankpool.interchange.config import InterchangeConfig
from rankpool.protocol.messages import Heartbeat, Stop

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from pyspy import collect, print_profile, start_pyspy  # noqa: E402
from sim_front import Front  # noqa: E402
from sim_roles import (  # noqa: E402
    FRONT_IDENTITY,
    POOLS_PER_HOST,
    interchange_main,
    listen_overflows,
    pools_main,
    raise_fd_limit,
)

Proc = subprocess.Popen[str]


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _peak_rss(pid: int) -> int:
    """VmHWM: the process's peak resident set (Linux), in bytes."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def percentile(samples: Sequence[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


@contextmanager
def simulation(npools: int, ranks: int, period: float, threshold: float,
               workdir: str) -> Iterator[tuple[Proc, Front, list[Proc]]]:
    """An interchange process with ``npools`` simulated pools registered, and a front-end."""
    raise_fd_limit()
    me = os.path.abspath(__file__)
    stats = os.path.join(workdir, f"ix-{npools}.json")
    config = InterchangeConfig(heartbeat_period=period, heartbeat_threshold=threshold,
                               run_dir=os.path.join(workdir, f"run-{npools}"), log_level="WARNING",
                               front_identity=FRONT_IDENTITY, parent_pid=os.getpid())
    ix = subprocess.Popen([sys.executable, me, "--role", "interchange", "--stats", stats],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    hosts: list[subprocess.Popen[str]] = []
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        assert ix.stdin is not None and ix.stdout is not None
        ix.stdin.write(config.to_json() + "\n")
        ix.stdin.close()
        ports = json.loads(ix.stdout.readline())
        nhosts = max(1, math.ceil(npools / POOLS_PER_HOST))
        overflows = listen_overflows()
        t = time.perf_counter()
        for h in range(nhosts):
            first = h * npools // nhosts
            count = (h + 1) * npools // nhosts - first
            hosts.append(subprocess.Popen(
                [sys.executable, me, "--role", "pools", "--port", str(ports["pool_port"]),
                 "--first", str(first), "--count", str(count), "--ranks", str(ranks),
                 "--period", str(period)], stdout=subprocess.PIPE, text=True))
        front = Front(ctx, ports, period)
        connecting = []  # when each host started connecting its pools (after its imports)
        for host in hosts:
            assert host.stdout is not None
            said, _, when = host.stdout.readline().partition(" ")
            if said != "CONNECTING":
                raise RuntimeError(f"a pool host did not start: {said!r}")
            connecting.append(float(when))
        for host in hosts:
            assert host.stdout is not None
            line = host.stdout.readline()
            if line.strip() != "READY":
                raise RuntimeError(f"a pool host did not get its pools registered: {line!r}")
        registered = len(front.command("pools"))
        if registered != npools:
            raise RuntimeError(f"{registered} of {npools} pools registered")
        front.start_s = time.perf_counter() - t  # type: ignore[attr-defined]
        front.register_start = min(connecting)  # type: ignore[attr-defined]
        front.register_s = time.time() - min(connecting)  # type: ignore[attr-defined]
        front.listen_overflows = listen_overflows() - overflows  # type: ignore[attr-defined]
        front.send(Heartbeat().encode())
        yield ix, front, hosts
        front.send(Stop("benchmark done").encode())
        ix.wait(60)
        for host in hosts:
            host.wait(60)
    finally:
        for proc in (ix, *hosts):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        ctx.destroy(linger=0)


def measure_size(npools: int, args: argparse.Namespace, workdir: str) -> dict[str, Any]:
    """Every figure for one pool count, in one fresh simulation."""
    out: dict[str, Any] = {"pools": npools, "ranks": npools * args.ranks}
    with simulation(npools, args.ranks, args.period, args.threshold, workdir) as (ix, front, hosts):
        out["register_s"] = front.register_s  # type: ignore[attr-defined]
        out["start_s"] = front.start_s  # type: ignore[attr-defined]
        out["listen_overflows"] = front.listen_overflows  # type: ignore[attr-defined]
        register_start = front.register_start  # type: ignore[attr-defined]
        proc = psutil.Process(ix.pid)
        host_procs = [psutil.Process(h.pid) for h in hosts]
        out["rss_idle_mb"] = proc.memory_info().rss / 2**20
        # keep-alive cost: the interchange idle while every pool heart-beats
        front.wait(1.0)
        profiling = args.profile and npools in (min(args.pools), max(args.pools))
        spy = None
        if profiling:
            spy_out = os.path.join(workdir, f"interchange-idle-{npools}.txt")
            spy = start_pyspy(ix.pid, args.idle, spy_out)
        c0, t0 = _cpu(proc), time.monotonic()
        front.wait(args.idle)
        out["idle_cores"] = (_cpu(proc) - c0) / (time.monotonic() - t0)
        if spy is not None:
            out["profile_idle"] = collect(spy, spy_out)
        # throughput
        warm = front.encode_flood(min(args.tasks, 20_000), args.batch)
        front.flood(warm, min(args.tasks, 20_000), args.window)
        rates, cpu_us, host_cores, ix_cores = [], [], [], []
        for _ in range(args.repeat):
            batches = front.encode_flood(args.tasks, args.batch)
            c0, h0 = _cpu(proc), sum(_cpu(p) for p in host_procs)
            elapsed = front.flood(batches, args.tasks, args.window)
            rates.append(args.tasks / elapsed)
            used = _cpu(proc) - c0
            cpu_us.append(used / args.tasks * 1e6)
            ix_cores.append(used / elapsed)
            host_cores.append((sum(_cpu(p) for p in host_procs) - h0) / elapsed)
        out["tasks_per_s"] = statistics.median(rates)
        out["tasks_per_s_runs"] = rates
        out["ix_cpu_us_per_task"] = statistics.median(cpu_us)
        out["ix_cores_busy"] = statistics.median(ix_cores)
        out["pool_hosts_cores_busy"] = statistics.median(host_cores)
        out["rss_after_flood_mb"] = proc.memory_info().rss / 2**20
        # dispatch latency at low load (one task at a time)
        samples = front.latency(args.latency)
        out["latency_ms"] = {"median": statistics.median(samples) * 1e3,
                             "p99": percentile(samples, 99) * 1e3, "max": max(samples) * 1e3,
                             "samples": len(samples)}
        out["rss_mb"] = proc.memory_info().rss / 2**20
        out["rss_peak_mb"] = _peak_rss(ix.pid) / 2**20
        if profiling:
            out["profile"] = profile_flood(front, ix.pid, args, workdir, f"interchange-{npools}")
    with open(os.path.join(workdir, f"ix-{npools}.json")) as fh:
        stats = json.load(fh)
    beats = [b for b in stats["beats"] if b[3] == npools]
    taken = sorted(stats["registered"])[:npools]
    if taken:  # as the interchange saw it, from the start of the pool hosts
        out["registered_s"] = {"half": taken[len(taken) // 2] - register_start,
                               "all": taken[-1] - register_start}
    if beats:
        wall = [b[1] * 1e3 for b in beats]
        cpu = [b[2] * 1e3 for b in beats]
        out["heartbeat_pass_ms"] = {"median": statistics.median(wall), "max": max(wall),
                                    "cpu_median": statistics.median(cpu), "passes": len(wall)}
        out["heartbeat_pass_share"] = statistics.median(cpu) / 1e3 / args.period
    print(f"  {npools:>6} pools ({npools * args.ranks:,} ranks): {out['tasks_per_s']:,.0f} tasks/s "
          f"({out['ix_cpu_us_per_task']:.1f} us interchange CPU per task), latency median "
          f"{out['latency_ms']['median']:.2f} ms p99 {out['latency_ms']['p99']:.2f} ms, RSS "
          f"{out['rss_mb']:.0f} MB (peak {out['rss_peak_mb']:.0f}), heartbeat pass "
          f"{out.get('heartbeat_pass_ms', {}).get('median', float('nan')):.1f} ms, idle "
          f"{out['idle_cores'] * 100:.1f} % of a core; registered in {out['register_s']:.1f} s "
          f"({out['start_s']:.1f} s from starting the pool hosts; "
          f"{out['listen_overflows']} listen-queue overflows), load average "
          f"{os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    return out


# =============================================================================================
# py-spy: sample processes while something runs, then summarise the stacks


def profile_flood(front: Front, pid: int, args: argparse.Namespace, workdir: str,
                  name: str) -> dict[str, Any]:
    """Flood the interchange while py-spy samples it; the top functions."""
    out = os.path.join(workdir, f"{name}.txt")
    spy = start_pyspy(pid, args.profile_seconds, out)
    if spy is None:
        return {"error": "py-spy not found"}
    time.sleep(0.5)
    end = time.monotonic() + args.profile_seconds
    while time.monotonic() < end and spy.poll() is None:
        front.flood(front.encode_flood(args.batch * 16, args.batch), args.batch * 16, args.window)
    return collect(spy, out)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| pools | ranks | tasks/s | vs 1 pool | interchange CPU µs/task (cores busy) | "
             "latency ms: median / p99 / max | RSS MB (peak) | heartbeat pass ms: wall (CPU) | "
             "idle CPU % | registration s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = {r.get("round", 1): r["tasks_per_s"] for r in rows if r["pools"] == 1}
    for r in rows:
        one = base.get(r.get("round", 1))
        rel = f"{r['tasks_per_s'] / one:.2f}" if one else "–"
        hb = r.get("heartbeat_pass_ms", {})
        beat = f"{hb['median']:.1f} ({hb.get('cpu_median', float('nan')):.1f})" if hb else "–"
        lat = r["latency_ms"]
        busy = f" ({r['ix_cores_busy']:.2f})" if "ix_cores_busy" in r else ""
        lines.append(
            f"| {r['pools']:,} | {r['ranks']:,} | {r['tasks_per_s']:,.0f} | {rel} | "
            f"{r['ix_cpu_us_per_task']:.1f}{busy} | {lat['median']:.2f} / {lat['p99']:.2f} / "
            f"{lat.get('max', float('nan')):.0f} | {r['rss_mb']:.0f} ({r['rss_peak_mb']:.0f}) | "
            f"{beat} | {r['idle_cores'] * 100:.1f} | {r.get('register_s', float('nan')):.1f} |")
    return "\n".join(lines)


def targets(rows: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """The issue's scale targets, each with whether it is met and the figure.

    Over several rounds (``--rounds``): the median rate and the median of each round's ratio
    to its own 1-pool rate; the largest RSS and registration time (every time)."""
    rounds: dict[int, dict[int, dict[str, Any]]] = {}
    for r in rows:
        rounds.setdefault(r.get("round", 1), {})[r["pools"]] = r
    bigs = [by[max(by)] for by in rounds.values() if by and max(by) >= 10_000]
    out: list[tuple[str, bool, str]] = []
    if not bigs:
        return out
    several = " (median of rounds)" if len(bigs) > 1 else ""
    rate = statistics.median(b["tasks_per_s"] for b in bigs)
    out.append(("≥ 50,000 tasks/s at 10,000 pools", rate >= 50_000,
                f"{rate:,.0f} tasks/s{several}"))
    ratios = [by[max(by)]["tasks_per_s"] / by[1]["tasks_per_s"]
              for by in rounds.values() if 1 in by and max(by) >= 10_000]
    if ratios:
        ratio = statistics.median(ratios)
        each = f"; each round: {', '.join(f'{x:.2f}' for x in ratios)}" if len(ratios) > 1 else ""
        out.append(("≥ 0.8× the 1-pool rate at 10,000 pools", ratio >= 0.8,
                    f"{ratio:.2f}×{several}{each}"))
    rss = max(b["rss_peak_mb"] for b in bigs)
    out.append(("RSS < 1 GB at 10,000 pools", rss < 1024, f"{rss:.0f} MB peak"))
    registered = [b["register_s"] for b in bigs if "register_s" in b]
    if registered:
        out.append(("10,000 pools registered in < 5 s", max(registered) < 5,
                    f"{max(registered):.1f} s" + (" at most" if len(registered) > 1 else "")))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pools", type=int, nargs="+", default=[1, 100, 1000, 10_000])
    p.add_argument("--ranks", type=int, default=128, help="worker ranks per simulated pool")
    p.add_argument("--tasks", type=int, default=200_000, help="tasks per throughput run")
    p.add_argument("--batch", type=int, default=1024, help="tasks per front-end message")
    p.add_argument("--window", type=int, default=32_768, help="most tasks outstanding")
    p.add_argument("--repeat", type=int, default=3, help="throughput runs per pool count")
    p.add_argument("--rounds", type=int, default=1,
                   help="the whole sequence of pool counts this many times (ratios per round)")
    p.add_argument("--latency", type=int, default=1000, help="single tasks for the latency")
    p.add_argument("--idle", type=float, default=6.0, help="seconds of idle CPU measurement")
    p.add_argument("--period", type=float, default=2.0, help="heartbeat period (the default)")
    p.add_argument("--threshold", type=float, default=10.0, help="heartbeat threshold")
    p.add_argument("--profile", action="store_true", help="py-spy the smallest and largest size")
    p.add_argument("--profile-seconds", type=float, default=10.0)
    p.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--role", choices=("interchange", "pools"), help=argparse.SUPPRESS)
    p.add_argument("--stats", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--limit", type=float, default=3600.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role == "interchange":
        return interchange_main(args.stats)
    if args.role == "pools":
        return pools_main(args.port, args.first, args.count, args.ranks, args.period, args.limit)
    if args.quick:
        args.pools = [p_ for p_ in args.pools if p_ <= 1000] or [1]
        args.tasks, args.repeat, args.latency, args.idle = 20_000, 1, 100, 2.0
        args.profile_seconds = min(args.profile_seconds, 3.0)
    rows = run(args)
    print(table(rows))
    for what, ok, figure in targets(rows):
        print(f"{'met    ' if ok else 'NOT met'}  {what}: {figure}")
    for r in rows:
        if "profile" in r:
            print_profile(f"interchange at {r['pools']:,} pools, flooded (py-spy)", r["profile"],
                          sys.stdout)
        if "profile_idle" in r:
            print_profile(f"interchange at {r['pools']:,} pools, idle (py-spy)", r["profile_idle"],
                          sys.stdout)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"settings": {k: v for k, v in vars(args).items() if k not in
                                    ("role", "stats", "port", "first", "count", "limit")},
                       "rows": rows}, fh, indent=1)
    return 0


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every pool count, smallest first, each in a fresh simulation; ``--rounds`` times, so
    that each ratio to the 1-pool rate is taken minutes apart, not a whole run apart."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="rankpool-scale-") as workdir:
        keep = os.environ.get("RANKPOOL_BENCH_KEEP")
        if keep:
            workdir = keep
            os.makedirs(workdir, exist_ok=True)
        for round_ in range(1, max(1, args.rounds) + 1):
            for n in sorted(args.pools):
                rows.append(dict(measure_size(n, args, workdir), round=round_))
    return rows


if __name__ == "__main__":
    sys.exit(main())
