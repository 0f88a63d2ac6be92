"""What each process of a run does with its garbage collector, for the collector's test and
``bench/gc_time.py``: put this folder on ``PYTHONPATH`` and set ``RANKPOOL_TEST_GC_PROBE`` to a
folder. Every Python process started with them writes, as it exits, one line to ``PID.txt``
there: its role (the interchange, pool rank N as ``PMI_RANK`` numbers it, or another), its
collector's thresholds, how many objects it froze, and the collections it ran (of each
generation) and the seconds they took, from ``gc.callbacks``."""

import atexit
import gc
import os
import sys
import time

_DIR = os.environ.get("RANKPOOL_TEST_GC_PROBE")
_runs = [0, 0, 0]
_seconds = [0.0]
_started = [0.0]


def _role() -> str:
    argv = " ".join(sys.argv)
    if "rankpool.interchange" in argv or "rankpool/interchange" in argv:
        return "interchange"
    if "PMI_RANK" in os.environ and ("mpi_pool" in argv or "rankpool" in argv):
        return "rank " + os.environ["PMI_RANK"]
    return "other"


def _timed(phase: str, info: dict) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        _runs[info["generation"]] += 1
        _seconds[0] += time.perf_counter() - _started[0]


def _write() -> None:
    with open(os.path.join(_DIR, f"{os.getpid()}.txt"), "w") as out:  # type: ignore[arg-type]
        young, older, oldest = gc.get_threshold()
        out.write(f"{_role()}|{young} {older} {oldest}|{gc.get_freeze_count()}"
                  f"|{' '.join(map(str, _runs))}|{_seconds[0]:.6f}\n")


if _DIR:
    gc.callbacks.append(_timed)
    atexit.register(_write)
