"""The generic ``concurrent.futures`` executor checks, run against every rankpool executor.

Our own versions of the generic tests of CPython 3.11's ``Lib/test/test_concurrent_futures.py``
(``ExecutorTest``, ``WaitTests``, ``AsCompletedTests``, the part of ``ExecutorShutdownTest`` that
needs no fresh interpreter) and of mpi4py's ``demo/futures/test_futures.py`` (``map`` with
``chunksize``, ``starmap``, unordered ``map``, ``num_workers``, ``bootup``). Each ``check_*``
takes a running executor with at least two worker ranks and asserts; ``CHECKS`` lists them.
``tests/integration/test_futures_contract.py`` runs them against ``Executor`` and
``tests/mpi/test_comm_futures.py`` against ``CommExecutor`` under ``mpiexec``.

Peer tests that do not apply, and why:

- ``test_max_workers_negative`` / ``test_init_*``: the executors take ``max_ranks`` or a
  communicator instead of ``max_workers``; bad values are checked in the front-end tests.
- ``test_map_exception`` with a task that kills its worker, ``BrokenProcessPool`` tests: a
  pool that dies fails its tasks with ``ManagerLost`` and its block is replaced, the
  executor is not broken (see ``tests/faults``).
- ``test_pass_by_reference`` style checks (a mutated argument seen by the task): arguments
  are pickled at submit, as in ``ProcessPoolExecutor``.
- ``test_shutdown_race_issue12456`` and ``test_hang_gh83386``: they check the internals of
  ``ProcessPoolExecutor``'s queue-feeding thread, which rankpool has no equivalent of.
"""

from __future__ import annotations

import gc
import os
import random
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from concurrent import futures
from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    CancelledError,
    Future,
    as_completed,
    wait,
)
from contextlib import contextmanager
from typing import Any

import pytest
from waiting import wait_for


def made_future(state: str, result: Any = None, exception: BaseException | None = None) -> Future:
    f: Future = Future()
    f._state, f._result, f._exception = state, result, exception  # type: ignore[attr-defined]
    return f


def mul(x: int, y: int) -> int:
    return x * y


def sleep_and_raise(t: float) -> None:
    time.sleep(t)
    raise ValueError("this is an exception")


def identity(x: Any) -> Any:
    return x


class Dummy:
    def method(self) -> int:
        return 42


def make_dummy(i: int) -> Dummy:
    return Dummy()


VALUE = None


def set_value(value: int) -> None:
    """An initializer: set a global of the worker process."""
    global VALUE
    VALUE = value


def read_value(comm: Any = None) -> Any:
    return VALUE


def fail_on_rank_two(comm: Any = None) -> None:
    """An initializer that fails on rank 2 of the MPI job."""
    from mpi4py import MPI
    if MPI.COMM_WORLD.Get_rank() == 2:
        raise KeyError("no model on this rank")


# -- ExecutorTest ---------------------------------------------------------------------------------
def check_submit(ex: Any) -> None:
    assert ex.submit(pow, 2, 8).result() == 256
    assert ex.submit(mul, 2, y=8).result() == 16
    assert ex.submit(mul, x=2, y=8).result() == 16


def check_map(ex: Any) -> None:
    assert list(ex.map(pow, range(10), range(10))) == list(map(pow, range(10), range(10)))
    assert list(ex.map(pow, range(10), range(10), chunksize=3)) == \
        list(map(pow, range(10), range(10)))


def check_map_exception(ex: Any) -> None:
    it = ex.map(divmod, [1, 1, 1, 1], [2, 3, 0, 5])
    assert next(it) == (0, 1)
    assert next(it) == (0, 1)
    with pytest.raises(ZeroDivisionError):
        next(it)


def check_map_timeout(ex: Any) -> None:
    results = []
    with pytest.raises(futures.TimeoutError):
        for r in ex.map(time.sleep, [0, 0, 8], timeout=5):
            results.append(r)
    assert results == [None, None]


def check_map_chunksize(ex: Any) -> None:
    """mpi4py's and ProcessPoolExecutor's ``chunksize``: several items per task."""
    items = list(range(37))
    for chunksize in (1, 2, 5, 37, 100):
        assert list(ex.map(pow, items, items, chunksize=chunksize)) == \
            [pow(i, i) for i in items]
    for bad in (0, -1):
        with pytest.raises(ValueError, match="chunksize"):
            ex.map(pow, items, items, chunksize=bad)
    with pytest.raises(TypeError, match="chunksize"):
        ex.map(pow, items, items, chunksize=1.5)
    assert list(ex.map(pow, [], [], chunksize=4)) == []
    # one iterable: ranges, lists and tuples are sliced, anything else read into lists
    def square(x: int) -> int:
        return x * x

    for seq in (range(5, 100, 7), list(range(23)), tuple(range(23)), (i for i in range(23)),
                range(0)):
        expected = [x * x for x in seq] if not hasattr(seq, "send") else \
            [x * x for x in range(23)]
        assert list(ex.map(square, seq, chunksize=4)) == expected
    items = list(range(10))
    results = ex.map(square, items, chunksize=3)
    items[:] = [-1] * 10  # the calls were taken when map was called
    assert list(results) == [x * x for x in range(10)]
    it = ex.map(lambda x: 1 // (x - 7), range(10), chunksize=4)
    assert [next(it) for _ in range(4)] == [1 // (x - 7) for x in range(4)]
    with pytest.raises(ZeroDivisionError):
        list(it)  # the chunk holding 7 raises where its results would have come
    it = ex.map(square, range(100), chunksize=4)
    assert next(it) == 0
    it.close()  # as a generator's: the chunks not read are dropped (their tasks cancelled)
    assert len(list(it)) < 4  # at most the rest of the chunk being read


def check_map_chunks_are_tasks(ex: Any) -> None:
    """Items of one chunk run in one task, on one worker process, one after another."""
    import os
    pids = list(ex.map(lambda i: os.getpid(), range(12), chunksize=6))
    assert len(set(pids[:6])) == 1 and len(set(pids[6:])) == 1


def check_starmap(ex: Any) -> None:
    args = [(i, i + 1) for i in range(20)]
    for chunksize in (1, 3):
        assert list(ex.starmap(mul, args, chunksize=chunksize)) == [mul(*a) for a in args]
        assert list(ex.starmap(mul, iter(args), chunksize=chunksize)) == [mul(*a) for a in args]


def check_map_unordered(ex: Any) -> None:
    delays = [0.5, 0.0, 0.0, 0.0]
    got = list(ex.map(lambda d: (time.sleep(d), d)[1], delays, unordered=True))
    assert sorted(got) == sorted(delays) and got[0] == 0.0     # as they complete
    assert sorted(ex.map(pow, range(15), range(15), unordered=True, chunksize=4)) == \
        sorted(pow(i, i) for i in range(15))
    it = ex.map(divmod, [1, 1], [0, 1], unordered=True)
    with pytest.raises(ZeroDivisionError):
        list(it)


def check_no_stale_references(ex: Any) -> None:
    """A submitted bound method does not keep its object alive (CPython's test of the same
    name; the function-pickle cache used to)."""
    obj = Dummy()
    collected = threading.Event()
    # held in a name: a weak reference's callback runs only while the reference lives
    _ref = weakref.ref(obj, lambda _: collected.set())
    ex.submit(obj.method).result()
    del obj
    for _ in range(20):
        gc.collect()
        if collected.wait(0.05):
            break
    assert collected.is_set(), "the executor kept the object of a submitted method alive"


def check_free_reference(ex: Any) -> None:
    for obj in ex.map(make_dummy, range(10)):
        ref = weakref.ref(obj)
        del obj
        gc.collect()
        assert ref() is None


def check_num_workers(ex: Any) -> None:
    assert isinstance(ex.num_workers, int) and ex.num_workers >= 2


def check_bootup(ex: Any) -> None:
    assert ex.bootup() is ex
    assert ex.bootup(wait=True) is ex


# -- WaitTests ------------------------------------------------------------------------------------
def check_wait_first_completed(ex: Any) -> None:
    f1 = ex.submit(mul, 21, 2)
    f2 = ex.submit(time.sleep, 1.0)
    cancelled = made_future("CANCELLED")
    done, not_done = wait([cancelled, f1, f2], return_when=FIRST_COMPLETED)
    assert done == {f1} and not_done == {cancelled, f2}


def check_wait_first_completed_some_already_completed(ex: Any) -> None:
    f1 = ex.submit(time.sleep, 1.0)
    notified, ok = made_future("CANCELLED_AND_NOTIFIED"), made_future("FINISHED", 42)
    done, not_done = wait([notified, ok, f1], return_when=FIRST_COMPLETED)
    assert done == {notified, ok} and not_done == {f1}


def check_wait_first_exception(ex: Any) -> None:
    f1 = ex.submit(mul, 2, 21)
    f2 = ex.submit(sleep_and_raise, 0.3)
    f3 = ex.submit(time.sleep, 3)
    done, not_done = wait([f1, f2, f3], return_when=FIRST_EXCEPTION)
    assert done == {f1, f2} and not_done == {f3}


def check_wait_first_exception_some_already_complete(ex: Any) -> None:
    f1 = ex.submit(divmod, 21, 0)
    f2 = ex.submit(time.sleep, 1.5)
    ok, cancelled = made_future("FINISHED", 42), made_future("CANCELLED")
    notified = made_future("CANCELLED_AND_NOTIFIED")
    done, not_done = wait([ok, cancelled, notified, f1, f2], return_when=FIRST_EXCEPTION)
    assert done == {ok, notified, f1} and not_done == {cancelled, f2}


def check_wait_first_exception_one_already_failed(ex: Any) -> None:
    f1 = ex.submit(time.sleep, 1.0)
    failed = made_future("FINISHED", exception=OSError())
    done, not_done = wait([failed, f1], return_when=FIRST_EXCEPTION)
    assert done == {failed} and not_done == {f1}


def check_wait_all_completed(ex: Any) -> None:
    f1 = ex.submit(divmod, 2, 0)
    f2 = ex.submit(mul, 2, 21)
    done, not_done = wait([f1, f2], return_when=ALL_COMPLETED)
    assert done == {f1, f2} and not_done == set()


def check_wait_timeout(ex: Any) -> None:
    f1 = ex.submit(mul, 6, 7)
    f2 = ex.submit(time.sleep, 3)
    done, not_done = wait([f1, f2], timeout=1.5, return_when=ALL_COMPLETED)
    assert done == {f1} and not_done == {f2}


def hold(gate: str, limit: float, comm: Any = None) -> None:
    """Wait until the file ``gate`` exists, ``limit`` seconds at most."""
    deadline = time.monotonic() + limit
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.005)


@contextmanager
def busy(ex: Any, limit: float = 30.0) -> Iterator[None]:
    """Hold every worker rank of ``ex`` in one task (a task over all of them: 1-rank tasks
    could share a rank and leave another idle) until the block ends, so that a task
    submitted inside cannot start meanwhile however slow the machine is; then wait for it."""
    folder = tempfile.mkdtemp(prefix="futures-checks-")
    gate = os.path.join(folder, "open")
    blocker = ex.requirements(num_ranks=ex.num_workers).submit(hold, gate, limit)
    try:
        wait_for(blocker.running, 10, interval=0.005)
        yield
    finally:
        open(gate, "w").close()
        wait([blocker], timeout=limit)
        shutil.rmtree(folder, ignore_errors=True)


def check_wait_returns_cancelled_future(ex: Any) -> None:
    """A future cancelled with cancel() is CANCELLED_AND_NOTIFIED: wait() returns it at once."""
    with busy(ex):
        f = ex.submit(time.sleep, 0.5)
        assert f.cancel()
        t = time.monotonic()
        done, not_done = wait([f], timeout=10)
        assert done == {f} and time.monotonic() - t < 1.0
        assert f._state == "CANCELLED_AND_NOTIFIED"
        with pytest.raises(CancelledError):
            f.result()


# -- AsCompletedTests -----------------------------------------------------------------------------
def check_as_completed_no_timeout(ex: Any) -> None:
    f1, f2 = ex.submit(mul, 2, 21), ex.submit(mul, 7, 6)
    others = [made_future("CANCELLED_AND_NOTIFIED"), made_future("FINISHED", exception=OSError()),
              made_future("FINISHED", 42)]
    assert set(as_completed([*others, f1, f2])) == {*others, f1, f2}


def check_as_completed_zero_timeout(ex: Any) -> None:
    f1 = ex.submit(time.sleep, 1.0)
    others = [made_future("CANCELLED_AND_NOTIFIED"), made_future("FINISHED", 42)]
    seen = set()
    with pytest.raises(futures.TimeoutError, match=r"1 \(of 3\) futures unfinished"):
        for f in as_completed([*others, f1], timeout=0):
            seen.add(f)
    assert seen == set(others)


def check_as_completed_duplicate_futures(ex: Any) -> None:
    f1 = ex.submit(time.sleep, 0.1)
    assert len(list(as_completed([f1, f1]))) == 1


def check_as_completed_free_reference(ex: Any) -> None:
    refs = []
    for f in as_completed([ex.submit(identity, i) for i in range(5)]):
        refs.append(weakref.ref(f))
        del f
    gc.collect()
    assert all(r() is None for r in refs)


def check_as_completed_yields_cancelled_future(ex: Any) -> None:
    with busy(ex):
        f = ex.submit(time.sleep, 0.5)
        assert f.cancel()
        assert list(as_completed([f], timeout=5)) == [f]


# -- ExecutorShutdownTest, the part that needs no fresh interpreter --------------------------------
def check_running_then_not_cancellable(ex: Any) -> None:
    """A future is RUNNING once a rank started its task; cancel() fails from then on."""
    f = ex.submit(time.sleep, 1.5)
    deadline = time.monotonic() + 1.2
    while not f.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert f.running() and not f.cancel() and not f.cancelled()
    assert f.result(timeout=10) is None


def mark_and_sleep(directory: str, i: int, seconds: float) -> int:
    """A task whose running leaves a trace: the file ``directory/i``."""
    with open(os.path.join(directory, str(i)), "w"):
        pass
    time.sleep(seconds)
    return i


def check_cancelled_task_never_runs(ex: Any) -> None:
    """cancel() returns True only for a task that never runs, however close to its start the
    cancel comes. Floods of short tasks (a rank starts most of them without a word to rank 0)
    are cancelled last first while the ranks work through them, so cancels meet tasks about to
    start, just started and queued; every task whose cancel() said True left no trace, every
    other one ran."""
    rng = random.Random(19)
    said_true = said_false = 0
    with tempfile.TemporaryDirectory() as directory:
        for round_ in range(6):
            here = os.path.join(directory, str(round_))
            os.mkdir(here)
            fs = [ex.submit(mark_and_sleep, here, i, rng.choice((0.0, 0.0005, 0.002, 0.004)))
                  for i in range(60)]
            first = os.path.join(here, "0")
            wait_for(lambda path=first: os.path.exists(path), 30, interval=0.0005)
            time.sleep(rng.uniform(0.0, 0.01))  # the ranks are working through the flood
            said = [f.cancel() for f in reversed(fs)][::-1]
            wait(fs, timeout=60)
            for i, (f, cancelled) in enumerate(zip(fs, said)):
                ran = os.path.exists(os.path.join(here, str(i)))
                what = "ran" if ran else "never ran"
                assert ran != cancelled, (f"round {round_}, task {i}: cancel() returned "
                                          f"{cancelled}, and the task {what}")
                assert f.cancelled() == cancelled and (cancelled or f.result() == i)
            said_true += sum(said)
            said_false += len(said) - sum(said)
    assert said_true and said_false  # both sides of the race were met


def quiet(ex: Any, timeout: float = 30) -> None:
    """Wait until no task of ``ex`` is pending, so that the next check's timings are its own
    (CPython's tests take a fresh executor each)."""
    deadline = time.monotonic() + timeout
    while ex.pending and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not ex.pending, f"{ex.pending} tasks still pending after {timeout} s"


CHECKS = {name[len("check_"):]: fn for name, fn in sorted(globals().items())
          if name.startswith("check_")}
