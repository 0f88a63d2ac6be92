"""Bad input of issue 6: each is refused at submit, or fails its own future with an error that
says what happened, and nothing else is affected (the next task succeeds, on the same block).

Functions that end the whole pool (``MPI.COMM_WORLD.Abort``, ``os._exit``, a segfault) are in
``test_pool_loss.py``: there the block is replaced.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fault_tasks as t
import psutil
import pytest
from helpers import descendants, executor, pool_tree, wait_no_new_children

from rankpool import Executor, RemoteTaskError, ResourceSpecError, SerializationError, TaskExit
from rankpool.errors import RemoteTraceback

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def ex3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Executor]:
    """One executor of 3 worker ranks shared by the tests: every test leaves it healthy.

    Its heartbeat threshold is 30 s: a pool's heartbeats share its one connection with its
    results, so a 512 MiB result on a loaded 2-core machine can hold them up longer than the
    2 s the other fault tests use, and once (a CI run on 2026-12-07, in an hour when the same
    result took 6-8 s to come back on an idle machine) longer than the default 10 s: the pool
    was declared lost (docs/reliability.md, "Bad input").
    """
    before = descendants()
    with executor(tmp_path_factory.mktemp("ex3"), max_ranks=3, heartbeat_period=0.5,
                  heartbeat_threshold=30.0) as ex:
        assert ex.requirements(num_ranks=3).submit(t.simulate, 1).result(timeout=30) == 3
        ranks = {p.pid for p in pool_tree(ex)}  # every rank is up once a 3-rank task ran
        yield ex
        # nothing here may cost the block: the same processes serve to the end
        assert {p.pid for p in pool_tree(ex)} == ranks
        assert [p["block_id"] for p in ex.pools()] == ["0"]
    wait_no_new_children(before)


@pytest.fixture(autouse=True)
def still_serves(ex3: Executor) -> Iterator[None]:
    """After each test: nothing queued or in flight, 1- and 3-rank tasks succeed."""
    yield
    assert ex3.submit(t.square, 7).result(timeout=20) == 49
    assert ex3.requirements(num_ranks=3).submit(t.simulate, 1).result(timeout=20) == 3
    assert ex3.outstanding() == 0 and ex3._broken is None


# -- what cannot be pickled -----------------------------------------------------------------------
def test_unpicklable_function_is_refused_at_submit(ex3: Executor) -> None:
    with pytest.raises(SerializationError, match="function") as info:
        ex3.submit(t.UnpicklableCallable())
    assert "generator" in str(info.value)


def test_unpicklable_argument_is_refused_at_submit(ex3: Executor) -> None:
    with pytest.raises(SerializationError, match="argument"):
        ex3.submit(t.square, (i for i in range(3)))


def test_function_the_ranks_cannot_import_fails_only_its_tasks(
        ex3: Executor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A function pickled by reference to a module only this process can import: every task
    of it fails with the ranks' ``ModuleNotFoundError``, queued ones too, and the rank serves
    on (it once ended the pool when the tasks came in a run)."""
    (tmp_path / "rankpool_caller_only.py").write_text("def triple(x):\n    return 3 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from rankpool_caller_only import triple  # type: ignore[import-not-found]

    errors = [f.exception(timeout=20) for f in [ex3.submit(triple, i) for i in range(20)]]
    for exc in errors:
        assert type(exc) is ModuleNotFoundError, repr(exc)
        assert "rankpool_caller_only" in str(exc)


def test_unpicklable_result_fails_its_future(ex3: Executor) -> None:
    exc = ex3.submit(t.unpicklable_result).exception(timeout=20)
    assert isinstance(exc, SerializationError)
    assert "result" in str(exc) and "generator" in str(exc)


def test_unpicklable_exception_arrives_as_remote_task_error(ex3: Executor) -> None:
    exc = ex3.submit(t.raise_unpicklable).exception(timeout=20)
    assert isinstance(exc, RemoteTaskError), repr(exc)
    assert exc.type_name == "fault_tasks.Unpicklable" and exc.remote_message == "holds a generator"
    assert "raise_unpicklable" in str(exc.__cause__)


def test_exception_whose_str_raises_fails_only_its_task(ex3: Executor) -> None:
    """It used to escape the rank's error report and abort the pool."""
    exc = ex3.submit(t.raise_bad_str).exception(timeout=20)
    assert type(exc) is t.BadStr
    assert "raise_bad_str" in str(exc.__cause__)


def test_exception_whose_class_cannot_be_imported_here(ex3: Executor, tmp_path: Path) -> None:
    exc = ex3.submit(t.raise_worker_only, str(tmp_path)).exception(timeout=20)
    assert isinstance(exc, RemoteTaskError)
    assert exc.type_name == "rankpool_worker_only_errors.WorkerOnlyError"
    assert exc.remote_message == "raised where its class is importable"
    assert exc.rank == 0 and exc.size == 1
    assert isinstance(exc.__cause__, RemoteTraceback)
    assert "WorkerOnlyError" in str(exc.__cause__)


def test_exception_of_a_class_defined_inside_the_task(ex3: Executor) -> None:
    """A class local to a function passed by value travels by value (dill): its type is
    rebuilt here, so the caller gets an instance of it with the remote traceback as cause."""
    def raise_local() -> None:
        class LocalError(Exception):
            pass
        raise LocalError("local boom")

    exc = ex3.submit(raise_local).exception(timeout=20)
    assert type(exc).__name__ == "LocalError" and str(exc) == "local boom"
    assert isinstance(exc.__cause__, RemoteTraceback)
    assert "rank 0 of 1" in str(exc.__cause__)


# -- a very large result --------------------------------------------------------------------------
def _rss(procs: list[psutil.Process]) -> int:
    return sum(p.memory_info().rss for p in procs)


@pytest.mark.parametrize("task", [t.big_result, t.big_bytes], ids=["numpy", "bytes"])
def test_very_large_result_arrives_and_memory_is_given_back(ex3: Executor, task: Any) -> None:
    """512 MiB comes back whole (NumPy out of band, bytes in the pickle); no process of the run
    keeps it afterwards: memory stays bounded by what is in flight, not by what went through."""
    procs = [psutil.Process(ex3.client.proc.pid), *pool_tree(ex3)]  # type: ignore[union-attr]
    assert ex3.submit(task, 1).result(timeout=20) is not None
    before = _rss(procs)
    value = ex3.submit(task, 512).result(timeout=60)
    assert len(value) == 512 * 2**20
    del value
    assert ex3.submit(task, 1).result(timeout=20) is not None
    assert _rss(procs) - before < 128 * 2**20, (before, _rss(procs))


# -- resource specifications ----------------------------------------------------------------------
@pytest.mark.parametrize("spec, key", [
    ({"gpus": 1}, "gpus"), ({"num_ranks": 0}, "num_ranks"), ({"num_ranks": 2.5}, "num_ranks"),
    ({"num_ranks": "2"}, "num_ranks"), ({"walltime": -1}, "walltime"),
    ({"walltime": float("nan")}, "walltime"), ({"results": "some"}, "results"),
    ({"priority": "high"}, "priority"),
    ({"num_ranks": 3, "num_nodes": 2, "ranks_per_node": 2}, "num_ranks"),
])
def test_invalid_resource_keys_are_refused_naming_the_key(ex3: Executor, spec: dict[str, Any],
                                                          key: str) -> None:
    with pytest.raises(ResourceSpecError) as info:
        ex3.requirements(**spec)
    assert info.value.key == key


def test_task_wider_than_any_block_is_refused_at_submit(ex3: Executor, tmp_path: Path) -> None:
    for spec in ({"num_ranks": 4}, {"num_nodes": 2, "ranks_per_node": 2}):
        with pytest.raises(ResourceSpecError, match="num_ranks|num_nodes"):
            ex3.requirements(**spec).submit(t.simulate, 1)
    with pytest.raises(ResourceSpecError, match="gpus"):
        Executor(max_ranks=2, requirements={"gpus": 1}, run_dir=str(tmp_path))
    with pytest.raises(ResourceSpecError, match="num_ranks"):
        Executor(max_ranks=2, requirements={"num_ranks": 3}, run_dir=str(tmp_path))


def test_multi_rank_task_without_a_comm_parameter_runs_once_as_an_application(
        ex3: Executor) -> None:
    # not refused: an MPI application task, its function called on the first of its 2 ranks
    assert ex3.requirements(num_ranks=2).submit(t.square, 3).result(timeout=60) == 9


# -- functions that try to leave ------------------------------------------------------------------
def test_sys_exit_fails_only_its_task(ex3: Executor) -> None:
    exc = ex3.submit(t.call_sys_exit).exception(timeout=20)
    assert isinstance(exc, TaskExit) and exc.type_name == "SystemExit" and exc.code == 3
    assert ex3.submit(t.square, 3).result(timeout=20) == 9


def test_os_fork_inside_a_task(ex3: Executor) -> None:
    """The child returns from the task too; the worker ends it before it can touch MPI."""
    assert ex3.submit(t.call_fork).result(timeout=20) == 42
    assert [f.result(timeout=20) for f in [ex3.submit(t.call_fork) for _ in range(4)]] == [42] * 4


# -- after shutdown -------------------------------------------------------------------------------
def test_submit_after_shutdown_raises(tmp_path: Path) -> None:
    before = descendants()
    with executor(tmp_path) as ex:
        view = ex.requirements(num_ranks=2)
        assert ex.submit(t.square, 3).result(timeout=20) == 9
    with pytest.raises(RuntimeError, match="shutdown"):
        ex.submit(t.square, 3)
    with pytest.raises(RuntimeError, match="shutdown"):
        view.submit(t.simulate, 1)
    ex.shutdown()  # idempotent
    wait_no_new_children(before)
