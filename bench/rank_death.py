"""What surviving rank deaths costs and gives: ``rankpool.Executor`` with keepers (the default)
against keepers off (``RANKPOOL_NO_KEEPER=1``: no detection, a death loses the pool), and
optionally against another rankpool source tree (``--previous SRC``: the build before
rank-death survival), side by side in one run.

1. no-op throughput (median of 3 runs of ``--tasks``) and one task's round trip (median of
   200 sequential submit + result), ``max_ranks=4``;
2. time from a rank's death (the task writes ``time.time()`` just before killing its rank with
   SIGKILL) to its future failing with ``WorkerLost`` in the front-end, 3 deaths in a pool of 8;
3. throughput of 10 ms tasks on a 6-rank pool before and after it lost 2 ranks.

    python bench/rank_death.py [--tasks 5000] [--previous /path/to/old/src] [--json out.json]

Each configuration runs in a child process of its own (``PYTHONPATH`` decides the source tree),
so nothing is shared between them.
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
SRC = HERE.parent / "src"


# -- the task functions (imported by reference on the ranks: this directory is on PYTHONPATH)
def noop() -> None:
    return None


def nap(seconds: float) -> None:
    time.sleep(seconds)


def die_at(path: str) -> None:
    import signal
    with open(path, "w") as fh:
        fh.write(repr(time.time()))
    os.kill(os.getpid(), signal.SIGKILL)


# -- measurements, run in a child process ------------------------------------------------------
def _throughput(ex: Any, fn: Any, n: int, *args: Any) -> float:
    t0 = time.perf_counter()
    futures = [ex.submit(fn, *args) for _ in range(n)]
    for f in futures:
        f.result(timeout=300)
    return n / (time.perf_counter() - t0)


def measure_overhead(tasks: int) -> dict[str, float]:
    from rankpool import Executor
    with Executor(max_ranks=4) as ex:
        _throughput(ex, noop, min(tasks, 2000))  # warm-up
        rates = [_throughput(ex, noop, tasks) for _ in range(3)]
        trips = []
        for _ in range(200):
            t0 = time.perf_counter()
            ex.submit(noop).result(timeout=60)
            trips.append(time.perf_counter() - t0)
    return {"noop_tasks_per_s": statistics.median(rates),
            "round_trip_ms": statistics.median(trips) * 1e3}


def measure_death_to_error() -> dict[str, Any]:
    from rankpool import Executor, WorkerLost
    delays = []
    with Executor(max_ranks=8) as ex:
        ex.submit(noop).result(timeout=60)
        for _ in range(3):
            with tempfile.TemporaryDirectory() as tmp:
                stamp = os.path.join(tmp, "died")
                future = ex.submit(die_at, stamp)
                seen: list[float] = []
                future.add_done_callback(lambda f, seen=seen: seen.append(time.time()))
                exc = future.exception(timeout=60)
                assert isinstance(exc, WorkerLost), repr(exc)
                time.sleep(0.05)  # the callback ran in the front-end's thread
                delays.append((seen[0] - float(Path(stamp).read_text())) * 1e3)
    return {"death_to_error_ms": delays, "median_ms": statistics.median(delays)}


def measure_survivors(n: int) -> dict[str, float]:
    from rankpool import Executor, WorkerLost
    with Executor(max_ranks=6) as ex:
        _throughput(ex, nap, 60, 0.01)  # warm-up
        before = statistics.median(_throughput(ex, nap, n, 0.01) for _ in range(3))
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(2):
                exc = ex.submit(die_at, os.path.join(tmp, str(i))).exception(timeout=60)
                assert isinstance(exc, WorkerLost), repr(exc)
        deadline = time.monotonic() + 30  # the capacity report follows the failed results
        while ex.pools()[0]["ranks"] != 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        ranks = ex.pools()[0]["ranks"]
        after = statistics.median(_throughput(ex, nap, n, 0.01) for _ in range(3))
    return {"before_tasks_per_s": before, "after_tasks_per_s": after, "ranks_after": ranks}


CASES = {"overhead": measure_overhead, "death": measure_death_to_error,
         "survivors": measure_survivors}


def child(case: str, arg: int) -> None:
    fn = CASES[case]
    result = fn(arg) if case != "death" else fn()  # type: ignore[operator]
    print(json.dumps(result))


def run_case(case: str, arg: int, src: Path, keeper: bool) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(src)])}
    if not keeper:
        env["RANKPOOL_NO_KEEPER"] = "1"
    proc = subprocess.run([sys.executable, __file__, "--child", case, str(arg)], env=env,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:] or ["?"]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=5000, help="no-op tasks per throughput run")
    p.add_argument("--previous", type=Path, default=None,
                   help="the src directory of another rankpool build to compare with")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ns = p.parse_args(argv)
    if ns.child:
        child(ns.child[0], int(ns.child[1]))
        return 0
    results: dict[str, Any] = {}
    configs = [("keepers on", SRC, True), ("keepers off", SRC, False)]
    if ns.previous is not None:
        configs.append(("previous build", ns.previous, True))
    for _ in range(2):  # interleaved, twice: drift on a shared machine hits every one alike
        for name, src, keeper in configs:
            got = run_case("overhead", ns.tasks, src, keeper)
            results.setdefault(f"overhead: {name}", []).append(got)
    results["death to error (keepers on)"] = run_case("death", 0, SRC, True)
    results["6 ranks, 10 ms tasks, before/after losing 2"] = run_case("survivors", 300, SRC, True)
    print(json.dumps(results, indent=1))
    if ns.json is not None:
        ns.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
