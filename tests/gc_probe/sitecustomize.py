"""What each process of a run does with its garbage collector, for the collector's tests: put
this folder on ``PYTHONPATH`` and set ``RANKPOOL_TEST_GC_PROBE`` to a folder. Every Python
process started with them writes, as it exits, one line to ``PID.txt`` there: its role (the
interchange, pool rank N as ``PMI_RANK`` numbers it, or another), its collector's thresholds
and how many objects it froze."""

import atexit
import gc
import os
import sys

_DIR = os.environ.get("RANKPOOL_TEST_GC_PROBE")


def _role() -> str:
    argv = " ".join(sys.argv)
    if "rankpool.interchange" in argv or "rankpool/interchange" in argv:
        return "interchange"
    if "PMI_RANK" in os.environ and ("mpi_pool" in argv or "rankpool" in argv):
        return "rank " + os.environ["PMI_RANK"]
    return "other"


def _write() -> None:
    with open(os.path.join(_DIR, f"{os.getpid()}.txt"), "w") as out:  # type: ignore[arg-type]
        young, older, oldest = gc.get_threshold()
        out.write(f"{_role()}|{young} {older} {oldest}|{gc.get_freeze_count()}\n")


if _DIR:
    atexit.register(_write)
