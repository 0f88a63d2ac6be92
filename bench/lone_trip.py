"""Where one lone task's round trip goes: every process of the path stamps the time around its
steps, and the median trip is printed step by step.

    python bench/lone_trip.py [--trips 500] [--fine] [--src PATH]

Runs ``rankpool.Executor(max_ranks=2)`` in a child process, whose processes (the interchange,
the pool's ranks) all start with a ``sitecustomize`` that wraps the steps named in ``STEPS``
(``--fine`` adds ``FINE``) as their modules load; each wrapper writes ``perf_counter_ns()``
(``CLOCK_MONOTONIC``, one clock for every process of the host) to a file per process. The
trips are then read in time order, from ``SUBMIT`` to ``DONE``; the most common order of steps
is kept (a heartbeat or a second probe of the worker changes the order of a few) and each
step's median gap to the one before is printed. Each stamp costs its process 3-4 µs, so the
total reads somewhat above the round trip measured without them; compare builds with the
same ``--fine`` setting. ``--src`` measures another build's source tree.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

#: (module, class or "", function): steps wrapped; a ``manager``/``worker`` step ending in
#: ``?`` is stamped only when it returns true (those are called in every pass of a loop)
STEPS = [
    ("rankpool.frontends.client", "InterchangeClient", "_send_now"),
    ("rankpool.frontends.client", "InterchangeClient", "_handle"),
    ("rankpool.interchange.interchange", "Interchange", "on_client_message"),
    ("rankpool.interchange.interchange", "Interchange", "on_pool_message"),
    ("rankpool.mpi_pool.pool", "RankZero", "_handle"),
    ("rankpool.mpi_pool.pool", "RankZero", "_send_results"),
    ("rankpool.mpi_pool.manager", "Manager", "manager_dispatch?"),
    ("rankpool.mpi_pool.manager", "Manager", "manager_receive?"),
    ("rankpool.mpi_pool.worker", "Worker", "worker_receive?"),
    ("rankpool.mpi_pool.worker", "Worker", "worker_report"),
]
FINE = [
    ("rankpool.protocol.batches", "", "decode_tasks"),
    ("rankpool.protocol.result_batches", "", "split_results"),
    ("rankpool.mpi_pool.manager", "Manager", "submit_many"),
    ("rankpool.mpi_pool.placement.scheduler", "Scheduler", "assign"),
    ("rankpool.mpi_pool.subcomms", "Outbox", "send"),
    ("rankpool.mpi_pool.subcomms", "", "receive"),
    ("rankpool.mpi_pool.doorbell", "Doorbell", "ring"),
    ("rankpool.mpi_pool.plain_runs", "", "run_plain"),
    ("rankpool.frontends.settling", "", "settle_values"),
    ("rankpool.interchange.routing", "Routing", "on_tasks"),
    ("rankpool.interchange.routing", "", "match"),
]

#: the child's sitecustomize: wraps the steps of ``RP_STEPS`` as their modules load
HOOK = r'''
import functools, importlib.abc, importlib.util, os, sys, time
_dir, _fd = os.environ["RP_STAMPS"], None
def stamp(name, at=None):
    global _fd
    if _fd is None:
        _fd = os.open(os.path.join(_dir, f"{os.getpid()}.log"),
                      os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.write(_fd, f"{time.perf_counter_ns() if at is None else at} {os.getpid()} {name}\n".encode())
import builtins; builtins.rp_stamp = stamp
_steps = {}
for line in os.environ["RP_STEPS"].split(";"):
    mod, cls, fn = line.split(",")
    _steps.setdefault(mod, []).append((cls, fn))
def _wrap(owner, fn, label):
    when_true = fn.endswith("?")
    fn = fn.rstrip("?")
    f = getattr(owner, fn)
    @functools.wraps(f)
    def wrapped(*a, **k):  # stamps are sorted by time: "in" may be written after the call
        t = time.perf_counter_ns()
        r = f(*a, **k)
        if r or not when_true:
            stamp(label + ":in", t)
            stamp(label + ":out")
        return r
    setattr(owner, fn, wrapped)
class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in _steps:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            for cls, fn in _steps[name]:
                owner = getattr(module, cls) if cls else module
                _wrap(owner, fn, f"{cls}.{fn.rstrip('?')}" if cls else fn)
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, _Finder())
'''

#: the child: lone no-op tasks one after another, each between SUBMIT and DONE
CHILD = r'''
import builtins, statistics, sys, tempfile, time
from rankpool import Executor
def noop():
    return None
stamp = builtins.rp_stamp
with Executor(max_ranks=2, run_dir=tempfile.mkdtemp(prefix="lone-trip-")) as ex:
    for _ in range(50):
        ex.submit(noop).result()
    trips = []
    for _ in range(int(sys.argv[1])):
        t = time.perf_counter()
        stamp("SUBMIT")
        ex.submit(noop).result()
        stamp("DONE")
        trips.append(time.perf_counter() - t)
print(f"median round trip with stamps: {statistics.median(trips) * 1e3:.2f} ms")
'''


def read_trips(folder: Path) -> list[list[tuple[int, str, str]]]:
    stamps = []
    for path in folder.glob("*.log"):
        for line in path.read_text().splitlines():
            at, pid, name = line.split(maxsplit=2)
            stamps.append((int(at), pid, name))
    stamps.sort()
    trips, trip = [], None
    for entry in stamps:
        if entry[2] == "SUBMIT":
            trip = [entry]
        elif trip is not None:
            trip.append(entry)
            if entry[2] == "DONE":
                trips.append(trip)
                trip = None
    return trips


def report(trips: list[list[tuple[int, str, str]]]) -> None:
    orders = collections.Counter(tuple(name for _, _, name in trip) for trip in trips)
    order, count = orders.most_common(1)[0]
    kept = [trip for trip in trips if tuple(name for _, _, name in trip) == order]
    print(f"{len(trips)} trips; {count} in the most common order of steps, whose medians "
          f"follow (µs)")
    print("| step | process | since the step before | since submit |\n|---|---|---:|---:|")
    pids: dict[str, str] = {}
    for i, name in enumerate(order):
        pid = kept[0][i][1]
        who = pids.setdefault(pid, f"process {len(pids) + 1}")
        gap = statistics.median(t[i][0] - t[i - 1][0] for t in kept) / 1e3 if i else 0.0
        since = statistics.median(t[i][0] - t[0][0] for t in kept) / 1e3
        print(f"| {name} | {who} | {gap:.1f} | {since:.1f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trips", type=int, default=500)
    ap.add_argument("--fine", action="store_true", help="stamp the steps inside the steps too")
    ap.add_argument("--src", help="the source tree of the build to measure (default: installed)")
    ns = ap.parse_args(argv)
    steps = STEPS + (FINE if ns.fine else [])
    with tempfile.TemporaryDirectory(prefix="lone-trip-") as tmp:
        hook, stamps = Path(tmp, "hook"), Path(tmp, "stamps")
        hook.mkdir()
        stamps.mkdir()
        (hook / "sitecustomize.py").write_text(HOOK)
        path = [str(hook)] + ([ns.src] if ns.src else [])
        env = dict(os.environ, RP_STAMPS=str(stamps),
                   RP_STEPS=";".join(",".join(step) for step in steps),
                   PYTHONPATH=os.pathsep.join(
                       path + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        subprocess.run([sys.executable, "-c", CHILD, str(ns.trips)], env=env, check=True,
                       timeout=600)
        report(read_trips(stamps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
