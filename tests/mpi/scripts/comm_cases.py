"""CommExecutor test program: ``mpiexec -n N python comm_cases.py CASE``.

Root runs the named case and prints RESULT lines; the test asserts on them.
"""

import asyncio
import os
import sys
import time

import numpy as np
from mpi4py import MPI

sys.path.insert(0, os.path.dirname(__file__))
from _report import report  # noqa: E402

import rankpool  # noqa: E402
from rankpool import CommExecutor  # noqa: E402


def allreduce(n, comm=None):
    return comm.allreduce(n)


def where(comm=None):
    return [comm.Get_rank(), comm.Get_size(), MPI.COMM_WORLD.Get_rank()]


def rank_of(comm=None):
    return comm.Get_rank()


def first_arg(comm, x):
    return comm.Get_size() * x


def fail_on(ranks, comm=None):
    if comm.Get_rank() in ranks:
        raise ValueError(f"failed on rank {comm.Get_rank()}")
    comm.Barrier() if not ranks else None
    return comm.Get_rank()


def raise_while_peers_wait(comm=None):
    if comm.Get_rank() == 1:
        raise KeyError("rank 1 gives up")
    comm.Barrier()  # rank 0 waits here forever


def nap(seconds, comm=None):
    time.sleep(seconds)
    return seconds


def echo(x):
    return x


def variable(name):
    return os.environ.get(name)


def double_array(a):
    return a * 2


def array_per_rank(n, comm=None):
    return np.full(n, comm.Get_rank(), dtype=np.int32)


class Unpicklable:
    def __reduce__(self):
        raise TypeError("refuses to pickle")


def bad_result():
    return Unpicklable()


def case_basic(ex):
    report("pow", ex.submit(pow, 2, 10).result())
    futs = {w: ex.requirements(num_ranks=w).submit(allreduce, 1) for w in (2, 3, 4)}
    report("allreduce", {w: f.result() for w, f in futs.items()})
    f = ex.requirements(num_ranks=4).submit(allreduce, 1)
    f.label = "sim"
    report("label", [f.label, isinstance(f.task_id, int), f.result()])
    report("all", ex.requirements(num_ranks=4, results="all").submit(rank_of).result())
    report("first_arg", ex.requirements(num_ranks=2).submit(first_arg, None, 5).result())
    report("comm_positional_none", ex.requirements(num_ranks=3).submit(allreduce, 2, None).result())
    report("map", list(ex.map(echo, range(50))))
    report("one_rank_comm", ex.submit(where).result()[:2])
    # mixed widths at once, then every result is checked
    mixed = [(w, ex.requirements(num_ranks=w, results="all").submit(where)) for w in
             [1, 2, 3, 4, 1, 1, 2, 2, 3, 1] * 20]
    ok = all(len(f.result()) == w and [r[0] for r in f.result()] == list(range(w))
             and len({r[2] for r in f.result()}) == w for w, f in mixed)
    report("mixed", ok)
    view = ex.requirements(num_ranks=2)

    async def main():
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(view, allreduce, 4)
    report("asyncio", asyncio.run(main()))
    with ex.requirements(num_ranks=2) as scoped:
        g = scoped.submit(allreduce, 3)
    report("scoped", [g.done(), g.result()])


def case_errors(ex):
    def catch(fut):
        try:
            fut.result()
            return None
        except BaseException as exc:
            return {"type": type(exc).__name__, "msg": str(exc), "cause": str(exc.__cause__),
                    "notes": getattr(exc, "__notes__", [])}
    report("one_rank", catch(ex.requirements(num_ranks=2).submit(fail_on, [1])))
    report("every_rank", catch(ex.requirements(num_ranks=3).submit(fail_on, [0, 1, 2])))
    report("single", catch(ex.submit(fail_on, [0])))
    report("after", ex.requirements(num_ranks=4).submit(allreduce, 1).result())
    report("bad_result", catch(ex.submit(bad_result)))
    report("sys_exit", catch(ex.submit(sys.exit, 3)))
    report("after2", ex.requirements(num_ranks=4).submit(allreduce, 1).result())


def case_collective(ex):
    t = time.monotonic()
    try:
        ex.requirements(num_ranks=2).submit(raise_while_peers_wait).result(timeout=30)
        report("collective", None)
    except KeyError as exc:
        report("collective", {"type": "KeyError", "notes": getattr(exc, "__notes__", []),
                              "elapsed": time.monotonic() - t})
    # the pool keeps serving on the ranks left
    report("after", ex.requirements(num_ranks=2, results="all").submit(rank_of).result(timeout=30))
    report("stuck", ex.stuck_ranks)


def case_walltime(ex):
    t = time.monotonic()
    try:
        ex.requirements(walltime=0.5).submit(nap, 30).result(timeout=30)
        report("one", None)
    except rankpool.TaskTimeout as exc:
        report("one", {"elapsed": time.monotonic() - t, "msg": str(exc)})
    t = time.monotonic()
    try:
        ex.requirements(num_ranks=2, walltime=0.5).submit(nap, 30).result(timeout=30)
        report("two", None)
    except rankpool.TaskTimeout:
        report("two", {"elapsed": time.monotonic() - t})
    report("fast", ex.requirements(walltime=5).submit(nap, 0.01).result())
    report("after", ex.requirements(num_ranks=4).submit(allreduce, 1).result())


def case_numpy(ex):
    a = np.arange(2_000_000, dtype=np.float64)
    b = ex.submit(double_array, a).result()
    report("roundtrip", [bool(np.array_equal(b, a * 2)), str(b.dtype), b.shape[0]])
    small = np.arange(10, dtype=np.int16)
    report("small", ex.submit(double_array, small).result().tolist())
    parts = ex.requirements(num_ranks=3, results="all").submit(array_per_rank, 100_000).result()
    report("all", [[int(p[0]), p.shape[0], str(p.dtype)] for p in parts])


def case_many(ex):
    n = int(os.environ.get("MANY", "5000"))
    views = [ex.requirements(num_ranks=w) for w in (2, 3, 4)]
    futs = [(2 + i % 3, views[i % 3].submit(allreduce, 1)) for i in range(n)]
    report("many", sum(f.result(timeout=120) == w for w, f in futs))


def case_bad(ex):
    def err(call):
        try:
            call()
            return None
        except Exception as exc:
            return [type(exc).__name__, str(exc)]
    report("unknown_key", err(lambda: ex.requirements(gpus=1)))
    report("bad_value", err(lambda: ex.requirements(num_ranks=0)))
    report("bad_results", err(lambda: ex.requirements(results="some")))
    report("too_wide", err(lambda: ex.requirements(num_ranks=99).submit(allreduce, 1)))
    # a function without comm on 2 ranks is not refused: it runs once, as an MPI application
    report("no_comm", ex.requirements(num_ranks=2).submit(variable, "PARSL_NUM_RANKS").result())
    report("not_callable", err(lambda: ex.submit(42)))
    report("unpicklable_arg", err(lambda: ex.submit(echo, Unpicklable())))
    # refused before any collective call, so root alone may try
    report("bad_lend", err(lambda: CommExecutor(MPI.COMM_WORLD, lend=-1)))
    report("still_works", ex.submit(echo, 7).result())
    ex.shutdown()
    report("after_shutdown", err(lambda: ex.submit(echo, 1)))


def case_idle(ex, pids):
    import psutil
    procs = [psutil.Process(p) for p in pids]
    ex.requirements(num_ranks=len(pids) - 1).submit(allreduce, 1).result()
    time.sleep(1.0)  # let the back-off reach its idle cap
    before = [p.cpu_times() for p in procs]
    t = time.monotonic()
    time.sleep(3.0)
    elapsed = time.monotonic() - t
    after = [p.cpu_times() for p in procs]
    used = sum((a.user + a.system) - (b.user + b.system) for a, b in zip(after, before))
    report("idle_fraction", used / elapsed)


def main():
    case = sys.argv[1]
    pids = MPI.COMM_WORLD.allgather(os.getpid())
    with CommExecutor(MPI.COMM_WORLD, root=0, grace=1.0) as ex:
        if ex is not None:
            if case == "idle":
                case_idle(ex, pids)
            else:
                globals()[f"case_{case}"](ex)
    if MPI.COMM_WORLD.Get_rank() == 0:
        report("exit", True)


main()
