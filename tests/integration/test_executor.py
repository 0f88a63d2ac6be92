"""``rankpool.Executor`` end to end: interchange process, local pools under the bundled mpiexec.

The whole path with 1-rank and multi-rank tasks, the issue's example verbatim, futures
(labels, ids, done-callbacks and ``contextvars``), two pools on one interchange, shutdown
with work in flight, and options refused at construction. (Bad input:
``tests/faults/test_bad_input.py``.)
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    descendants,
    executor,
    pool_tree,
    start_pool,
    stop_process,
    tree,
    wait_for,
    wait_no_new_children,
)

from rankpool import Executor

pytestmark = pytest.mark.mpi


# -- task functions --------------------------------------------------------------------------------
def allreduce_rank(comm: Any = None) -> int:
    return comm.allreduce(comm.Get_rank())


def where(comm: Any = None) -> tuple[int, int]:
    return comm.Get_rank(), comm.Get_size()


def pid_after(seconds: float) -> int:
    import os
    import time
    time.sleep(seconds)
    return os.getpid()


def square(x: int) -> int:
    return x * x


def simulate(n: int, comm: Any = None) -> int:
    return comm.allreduce(n)


def rename(name: str, comm: Any = None) -> str:
    """The name the task's communicator had; it leaves ``name`` on it."""
    old = comm.Get_name()
    comm.Set_name(name)
    return str(old)


def free_and_derive(comm: Any = None) -> int:
    """Free the task's communicator, then derive and free more communicators than MPICH has
    ids for (2,048): every derived one must really be freed."""
    comm.Free()
    for _ in range(2500):
        comm.Dup().Free()
    return int(comm.allreduce(1))


@pytest.fixture(scope="module")
def ex4(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One executor of 4 worker ranks shared by the tests that leave it healthy."""
    before = descendants()
    with executor(tmp_path_factory.mktemp("ex4"), max_ranks=4) as ex:
        yield ex
    wait_no_new_children(before)


# -- the whole path -------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_one_rank_tasks_run_in_pool_processes(ex4: Executor) -> None:
    assert ex4.submit(pow, 2, 10).result(timeout=20) == 1024
    futures = [ex4.submit(pid_after, 0) for _ in range(20)]
    pids = {f.result(timeout=20) for f in futures}
    assert os.getpid() not in pids
    pool_ranks = {p.pid for p in tree(ex4._blocks.procs["0"].pid)}  # type: ignore[union-attr]
    assert pids <= pool_ranks
    assert ex4.outstanding() == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ranks", [2, 3, 4])
def test_multi_rank_tasks_get_a_communicator_of_their_width(ex4: Executor, ranks: int) -> None:
    view = ex4.requirements(num_ranks=ranks)
    futures = [view.submit(allreduce_rank) for _ in range(3)]
    assert [f.result(timeout=20) for f in futures] == [sum(range(ranks))] * 3
    # comm passed by keyword, as None, is replaced too
    assert view.submit(simulate, 5, comm=None).result(timeout=20) == 5 * ranks


@pytest.mark.timeout(60)
def test_tasks_on_the_same_ranks_reuse_one_communicator(ex4: Executor) -> None:
    """The communicator of a rank set is made once and kept (mpi_pool/comm_cache.py): a name
    one task leaves on it is there for the next task on the same ranks, on every rank."""
    full = ex4.requirements(num_ranks=4, results="all")
    token = f"kept-{os.getpid()}-{time.monotonic_ns()}"
    full.submit(rename, token).result(timeout=30)
    assert full.submit(rename, token + "-2").result(timeout=30) == [token] * 4


@pytest.mark.timeout(90)
def test_a_task_cannot_free_the_kept_communicator(ex4: Executor) -> None:
    """``Free`` on the task's communicator leaves it to the pool, while communicators the
    task derives from it free as usual; the next task on the same ranks runs on it."""
    full = ex4.requirements(num_ranks=4)
    assert full.submit(free_and_derive).result(timeout=60) == 4
    assert full.submit(allreduce_rank).result(timeout=30) == 6


def barrier(comm: Any = None) -> int:
    comm.Barrier()
    return int(comm.Get_size())


@pytest.mark.timeout(60)
def test_worker_ranks_sleep_between_tasks_until_rank_0_rings(ex4: Executor) -> None:
    """Worker ranks on rank 0's node wait for work on their doorbells, which rank 0 rings with
    every message it sends them, instead of polling MPI every 0.1 ms: a stream of 2-rank round
    trips wakes the pool's worker ranks a few times a task, not the tens of times such polls
    would (on a node with fewer cores than ranks they took the cores the tasks' ranks need)."""
    ex4.bootup()
    workers = [p for p in pool_tree(ex4) if p.name().startswith("python")
               and "rankpool.mpi_pool" in " ".join(p.cmdline())
               and p.environ().get("PMI_RANK") != "0"]
    assert len(workers) >= 4  # the worker ranks (and their keepers, which block)
    view = ex4.requirements(num_ranks=2)
    assert view.submit(barrier).result(timeout=30) == 2
    before = sum(p.num_ctx_switches().voluntary for p in workers)
    trips = 100
    for _ in range(trips):
        assert view.submit(barrier).result(timeout=30) == 2
    wakes = (sum(p.num_ctx_switches().voluntary for p in workers) - before) / trips
    assert wakes < 15, wakes  # 2 here; polling between tasks: 37


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@pytest.mark.timeout(60)
def test_rank_0_sleeps_while_its_ranks_run_queued_tasks_that_take_a_while(ex4: Executor) -> None:
    """Ranks that each hold several tasks of a few ms (a chunked ``map``) ring rank 0 with
    every report once a task ran 1 ms or more, so rank 0 sleeps until rung instead of polling
    MPI every 10-100 µs until they are all done: a few wake-ups a task, not hundreds."""
    ex4.bootup()
    [zero] = [p for p in pool_tree(ex4) if p.name().startswith("python")
              and "rankpool.mpi_pool" in " ".join(p.cmdline())
              and p.environ().get("PMI_RANK") == "0"
              and not any("rankpool.mpi_pool" in " ".join(c.cmdline()) for c in p.children())]
    assert list(ex4.map(nap, [0.001] * 8)) == [0.001] * 8
    before = zero.num_ctx_switches().voluntary
    tasks = 40  # 10 queued on each worker rank, 20 ms each
    assert list(ex4.map(nap, [0.02] * tasks)) == [0.02] * tasks
    wakes = (zero.num_ctx_switches().voluntary - before) / tasks
    assert wakes < 15, wakes  # 7 here; polling while they run: 29


@pytest.mark.timeout(90)
def test_a_ring_whose_message_mpich_shows_late_costs_no_sleep(ex4: Executor) -> None:
    """A worker woken by rank 0's ring may not see the message yet: MPICH can show a peer's
    message of the same next task (the other ranks' ``Barrier``) first, and each probe pulls in
    only so much. It then polls for a moment rather than sleeping until the next ring (0.1 s).
    On a busy node (here a process spinning beside the pool) 4-rank round trips took that
    0.1 s in 7-18 % of trips before; now none should."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        view = ex4.requirements(num_ranks=4)
        assert view.submit(barrier).result(timeout=30) == 4
        slow = 0
        for _ in range(300):
            start = time.perf_counter()
            assert view.submit(barrier).result(timeout=30) == 4
            slow += time.perf_counter() - start > 0.09
    finally:
        hog.kill()
        hog.wait()
    assert slow < 6, slow


@pytest.mark.timeout(60)
def test_results_all_returns_every_rank_in_rank_order(ex4: Executor) -> None:
    fut = ex4.requirements(num_ranks=3, results="all").submit(where)
    assert fut.result(timeout=20) == [(0, 3), (1, 3), (2, 3)]
    root = ex4.requirements(num_ranks=3).submit(where)
    assert root.result(timeout=20) == (0, 3)


@pytest.mark.timeout(60)
def test_the_issue_example_verbatim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # the default run dir, rankpool-runs/NNN, lands here
    before = descendants()

    # local: an interchange and one pool of 4 worker ranks via the bundled mpiexec
    with Executor(max_ranks=4) as ex:
        print(ex.submit(pow, 2, 10).result())
        with ex.requirements(num_ranks=2) as ex2:
            fut = ex2.submit(simulate, 3)
            fut.label = "sim-3"
        print(fut.result())                    # futures stay valid after the scope
        async def main():
            return await asyncio.get_running_loop().run_in_executor(ex2, simulate, 4)
        print(asyncio.run(main()))

    assert capsys.readouterr().out == "1024\n6\n8\n"
    assert fut.label == "sim-3" and fut.done()
    assert (tmp_path / "rankpool-runs" / "000" / "interchange.log").is_file()
    with pytest.raises(RuntimeError):
        ex.submit(pow, 2, 10)
    wait_no_new_children(before)


@pytest.mark.timeout(60)
def test_map_keeps_order_including_through_views(ex4: Executor) -> None:
    assert list(ex4.map(square, range(50), timeout=30)) == [x * x for x in range(50)]
    view = ex4.requirements(num_ranks=2)
    assert list(view.map(simulate, [1, 2, 3], timeout=30)) == [2, 4, 6]
    assert list(ex4.map(pow, [2, 3], [3, 2])) == [8, 9]


@pytest.mark.timeout(120)
def test_threads_submitting_at_once_each_get_their_own_results(ex4: Executor) -> None:
    """Floods from several threads at once share the client's inbox: every task arrives
    whole (its function, spec and arguments its own), every future gets its own value."""
    got: dict[int, list[Any]] = {}

    def flood(t: int) -> None:
        wide = ex4.requirements(num_ranks=2)
        futures = [(wide.submit(simulate, i) if i % 500 == 0 else ex4.submit(pow, t, i % 7))
                   for i in range(3000)]
        got[t] = [f.result(timeout=60) for f in futures]

    threads = [threading.Thread(target=flood, args=(t,)) for t in range(2, 6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(100)
    assert sorted(got) == [2, 3, 4, 5]
    for t, values in got.items():
        assert values == [2 * i if i % 500 == 0 else t ** (i % 7) for i in range(3000)]


@pytest.mark.timeout(60)
def test_futures_carry_task_id_and_label(ex4: Executor) -> None:
    futures = [ex4.submit(square, i) for i in range(5)]
    ids = [f.task_id for f in futures]
    assert all(isinstance(i, int) for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert all(f.label is None for f in futures)
    futures[2].label = "third"
    assert [f.result(timeout=20) for f in futures] == [0, 1, 4, 9, 16]
    assert futures[2].label == "third"
    assert "label='third'" in repr(futures[2]) and f"task_id={ids[2]}" in repr(futures[2])
    view_future = ex4.requirements(num_ranks=2).submit(simulate, 1)
    assert view_future.task_id > ids[-1]
    assert view_future.result(timeout=20) == 2


@pytest.mark.timeout(60)
def test_done_callbacks_run_in_the_submitters_context(ex4: Executor) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="unset")
    seen: list[tuple[str, str]] = []
    fired = threading.Event()

    def callback(f: Any) -> None:
        seen.append((var.get(), threading.current_thread().name))
        fired.set()

    def in_other_context() -> Any:
        var.set("submitter")
        return ex4.submit(pid_after, 1.0)

    fut = contextvars.copy_context().run(in_other_context)
    var.set("main")                      # this context is not the submitter's
    fut.add_done_callback(callback)      # added while pending: runs on the client thread
    assert fired.wait(20)
    assert seen[0] == ("submitter", "rankpool-client")  # another thread, the submitter's context
    late: list[str] = []
    fut.add_done_callback(lambda f: late.append(var.get()))  # already done: runs here, at once
    assert late == ["submitter"]
    assert var.get() == "main"


# -- two pools on one interchange -----------------------------------------------------------------
@pytest.mark.timeout(90)
def test_two_pools_on_one_interchange_share_the_work(tmp_path: Path) -> None:
    before = descendants()
    with executor(tmp_path / "run") as ex:
        extra = start_pool(ex.client.pool_address, "extra", 2, tmp_path / "extra",
                           extra=("--run-dir", str(tmp_path / "extra"),
                                  "--server-key", ex.pool_config.server_key))
        try:
            wait_for(lambda: {p["block_id"] for p in ex.pools()} == {"0", "extra"}, timeout=30)
            pools = {p["block_id"]: p for p in ex.pools()}
            assert pools["extra"]["ranks"] == 2 and pools["0"]["ranks"] == 2
            ranks_0 = {p.pid for p in tree(ex._blocks.procs["0"].pid)}  # type: ignore[union-attr]
            ranks_x = {p.pid for p in tree(extra.pid)}

            # a burst is spread: both pools hold tasks at once, and both ran some
            futures = [ex.submit(pid_after, 0.4) for _ in range(8)]
            wait_for(lambda: all(p["tasks"] > 0 for p in ex.pools()), timeout=10)
            pids = {f.result(timeout=30) for f in futures}
            assert pids & ranks_0 and pids & ranks_x, (pids, ranks_0, ranks_x)
            assert pids <= ranks_0 | ranks_x

            # with block 0 held, work still flows, to the other pool only
            assert ex.client.command("hold", "0") == [pools["0"]["pool_id"]]
            held = [ex.submit(pid_after, 0) for _ in range(20)]
            assert {f.result(timeout=30) for f in held} <= ranks_x
            assert {p["block_id"]: p["held"] for p in ex.pools()} == {"0": True, "extra": False}
            ex.client.command("release", "0")
            wide = ex.requirements(num_ranks=2).submit(simulate, 1)
            assert wide.result(timeout=20) == 2
        finally:
            ex.shutdown()
            code = stop_process(extra, timeout=15)
    assert code == 0  # the interchange's Stop reached the hand-started pool: a clean exit
    wait_no_new_children(before)


# -- shutdown -------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_shutdown_waits_for_work_in_flight(tmp_path: Path) -> None:
    before = descendants()
    ex = Executor(max_ranks=2, run_dir=str(tmp_path), heartbeat_period=0.2, heartbeat_threshold=2)
    futures = [ex.submit(pid_after, 0.3) for _ in range(6)]
    wide = ex.requirements(num_ranks=2).submit(simulate, 7)
    ex.shutdown(wait=True)
    assert all(f.done() for f in futures) and wide.done()
    assert all(isinstance(f.result(0), int) for f in futures)
    assert wide.result(0) == 14
    wait_no_new_children(before)


@pytest.mark.timeout(60)
def test_shutdown_cancel_futures_ends_every_future(tmp_path: Path) -> None:
    before = descendants()
    ex = Executor(max_ranks=2, run_dir=str(tmp_path), heartbeat_period=0.2, heartbeat_threshold=2)
    assert ex.submit(square, 2).result(timeout=20) == 4
    futures = [ex.submit(pid_after, 0.02) for _ in range(300)]
    futures += [ex.requirements(num_ranks=2).submit(simulate, 1) for _ in range(20)]
    wait_for(lambda: any(f.done() for f in futures), timeout=20)
    start = time.monotonic()
    ex.shutdown(wait=True, cancel_futures=True)
    assert time.monotonic() - start < 20
    assert all(f.done() for f in futures)  # nothing left pending: cancelled or finished
    cancelled = [f for f in futures if f.cancelled()]
    finished = [f for f in futures if not f.cancelled()]
    assert cancelled, "a deep queue should have left something to cancel"
    for f in finished:
        assert f.exception(0) is None
    with pytest.raises(RuntimeError):
        ex.submit(square, 1)
    wait_no_new_children(before)


@pytest.mark.timeout(30)
def test_bad_options_are_refused_at_construction(tmp_path: Path) -> None:
    before = descendants()
    for kwargs, name in [({"max_ranks": 0}, "max_ranks"), ({"max_ranks": 2.0}, "max_ranks"),
                         ({"heartbeat_period": -1}, "heartbeat_period"),
                         ({"heartbeat_period": 2, "heartbeat_threshold": 1}, "heartbeat_threshold"),
                         ({"provider": object()}, "provider")]:
        with pytest.raises((ValueError, TypeError), match=name):
            Executor(run_dir=str(tmp_path), **kwargs)
    assert not descendants() - before  # nothing was started

