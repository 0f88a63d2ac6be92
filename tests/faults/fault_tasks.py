"""Task functions of the fault and bad-input tests, imported by reference on the ranks.

Each imports what it needs inside its body, so that loading this module on a rank costs
nothing. ``marks`` arguments name a directory where a task drops one file per run, so a test
can count how often each task ran without trusting the futures.
"""

from __future__ import annotations

import os
import time
from typing import Any


def mark(marks: str, name: str) -> None:
    """Record one run of the task ``name`` (one file per run, never overwritten)."""
    if marks:
        path = os.path.join(marks, f"{name}.{os.getpid()}.{time.monotonic_ns()}")
        open(path, "w").close()


def runs(marks: str) -> dict[str, int]:
    """How many times each task recorded by :func:`mark` ran."""
    counts: dict[str, int] = {}
    for entry in os.listdir(marks):
        name = entry.split(".", 1)[0]
        counts[name] = counts.get(name, 0) + 1
    return counts


def nap(seconds: float, marks: str = "", name: str = "nap") -> int:
    """Sleep; the pid of the rank that ran it."""
    mark(marks, name)
    time.sleep(seconds)
    return os.getpid()


def simulate(n: int, comm: Any = None) -> int:
    return comm.allreduce(n)


def square(x: int) -> int:
    return x * x


# -- ranks that die or misbehave -----------------------------------------------------------------
def exit_on_rank(bad: int, comm: Any = None) -> int:
    """Every rank but ``bad`` waits in a collective; ``bad`` ends its process at once."""
    if comm.Get_rank() == bad:
        os._exit(7)
    return comm.allreduce(1)


def segfault() -> None:
    import ctypes
    ctypes.string_at(0)


def raise_on_rank(bad: int, comm: Any = None) -> int:
    """Rank ``bad`` raises while its peers wait in an allreduce it never joins."""
    if comm.Get_rank() == bad:
        raise ValueError(f"rank {bad} gives up")
    return comm.allreduce(1)


def block_forever(marks: str = "", comm: Any = None) -> None:
    """Every rank of the task waits for an event that never comes."""
    import threading
    mark(marks, "blocked")
    threading.Event().wait()


def call_sys_exit() -> None:
    import sys
    sys.exit(3)


def call_abort() -> None:
    from mpi4py import MPI
    MPI.COMM_WORLD.Abort(5)


def call_fork() -> int:
    """Fork; the child returns from the task too (the worker must end it, not the parent)."""
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
    return 42


def big_result(mib: int) -> Any:
    import numpy as np
    return np.ones(mib * 2**20, dtype=np.uint8)


def big_bytes(mib: int) -> bytes:
    return b"x" * (mib * 2**20)


class Unpicklable(Exception):
    """An exception carrying a generator: neither pickle nor dill can serialize it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.pending = (i for i in range(3))


class UnpicklableCallable:
    """A callable whose instances carry a generator, so the function itself cannot travel."""

    def __init__(self) -> None:
        self.pending = (i for i in range(3))

    def __call__(self) -> int:
        return 1


def unpicklable_result() -> Any:
    return (i for i in range(3))


def raise_worker_only(module_dir: str) -> None:
    """Raise an exception whose class lives in a module only the worker can import."""
    import importlib
    import sys
    path = os.path.join(module_dir, "rankpool_worker_only_errors.py")
    with open(path, "w") as f:
        f.write("class WorkerOnlyError(Exception):\n    pass\n")
    sys.path.insert(0, module_dir)
    importlib.invalidate_caches()
    module = importlib.import_module("rankpool_worker_only_errors")
    raise module.WorkerOnlyError("raised where its class is importable")


def raise_unpicklable() -> None:
    raise Unpicklable("holds a generator")


class BadStr(Exception):
    """An exception whose ``str`` itself raises."""

    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def raise_bad_str() -> None:
    raise BadStr()


# -- for Parsl, where a retry runs on another block ----------------------------------------------
def _block() -> str:
    return os.environ.get("PARSL_WORKER_BLOCK_ID", "")


def hang_on_block_0(marks: str, name: str, comm: Any = None) -> str:
    """Wait for ever on block 0 (which the test kills); elsewhere return the block id."""
    mark(marks, name)
    if _block() == "0":
        time.sleep(120)
    return _block()


def exit_on_block_0(marks: str, name: str, comm: Any = None) -> str:
    """On block 0, rank 1 of the task ends its process while rank 0 waits in an allreduce."""
    mark(marks, name)
    if _block() == "0" and comm.Get_rank() == 1:
        os._exit(9)
    comm.allreduce(1)
    return _block()


# -- ranks that die: the pool serves on without them ---------------------------------------------
def kill_own_rank(how: str, marks: str = "", name: str = "") -> None:
    """End this rank's process: ``SIGSEGV``/``SIGKILL``/... by that signal, ``exit3`` by
    ``os._exit(3)``."""
    import signal
    mark(marks, name or how)
    if how.startswith("exit"):
        os._exit(int(how[4:]))
    os.kill(os.getpid(), getattr(signal, how))
    time.sleep(10)  # never reached: the signal kills at once


def simulate_marked(n: int, marks: str, name: str, comm: Any = None) -> int:
    """An allreduce of ``n`` over the task's ranks, recorded once per run (by its rank 0)."""
    if comm.Get_rank() == 0:
        mark(marks, name)
    return comm.allreduce(n)


def die_in_allreduce(bad: int, marks: str = "", comm: Any = None) -> int:
    """The other ranks wait in an allreduce; rank ``bad`` of the task is killed (SIGKILL)
    before it joins."""
    import signal
    if comm.Get_rank() == bad:
        mark(marks, "died")
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGKILL)
    return comm.allreduce(1)


def die_once(marks: str, name: str, how: str = "") -> int:
    """The first run of ``name`` kills its rank as :func:`kill_own_rank` does (``how`` empty:
    never); a later run returns this rank's pid."""
    first = not any(entry.split(".", 1)[0] == name for entry in os.listdir(marks))
    mark(marks, name)
    if first and how:
        kill_own_rank(how)
    return os.getpid()
