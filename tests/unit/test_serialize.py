"""Serialization round trips: functions by digest, out-of-band buffers, remote errors."""

from __future__ import annotations

import pickle
import sys
import types

import numpy as np
import pytest

from rankpool.errors import (
    RemoteTaskError,
    RemoteTraceback,
    SerializationError,
    TaskExit,
    TaskTimeout,
)
from rankpool.task.serialize import (
    OOB_THRESHOLD,
    FunctionLoader,
    FunctionPickler,
    add_note,
    dumps_data,
    dumps_error,
    error_summary,
    loads_data,
    loads_error,
)


def square(x):
    return x * x


def test_functions_serialized_once_and_loaded_once():
    pickler, loader = FunctionPickler(), FunctionLoader()
    d1, p1 = pickler.dumps(square)
    d2, p2 = pickler.dumps(square)
    assert d1 == d2 and p1 is p2
    fn = loader.loads(d1, p1)
    assert fn(7) == 49 and loader.loads(d1, b"not used: cached") is fn
    lam = lambda y: y + 1  # noqa: E731  (by value)
    d3, p3 = pickler.dumps(lam)
    assert d3 != d1 and loader.loads(d3, p3)(1) == 2


class Holder:
    def method(self, x):
        return x


def test_function_cache_keeps_no_callable_alive():
    import gc
    import weakref
    pickler = FunctionPickler()
    obj = Holder()
    alive = weakref.ref(obj)
    first = pickler.dumps(obj.method)
    assert pickler.dumps(obj.method) is first        # a bound method is cached by its parts
    fn = lambda y: y  # noqa: E731
    fn_alive = weakref.ref(fn)
    pickler.dumps(fn)
    del obj, fn
    gc.collect()
    assert alive() is None and fn_alive() is None
    pickler.dumps(pow)                                # builtins: cached, never collected
    assert len(pickler._cache) == 1


def test_unpicklable_function_is_named():
    class Local:
        def __reduce__(self):
            raise TypeError("no")

    class CallableLocal(Local):
        def __call__(self):
            return 1
    with pytest.raises(SerializationError, match="cannot serialize function"):
        FunctionPickler().dumps(CallableLocal())


def test_numpy_travels_out_of_band():
    big = np.arange(OOB_THRESHOLD, dtype=np.float64)
    small = np.arange(10)
    data, buffers = dumps_data(((big, small), {"k": big[:5]}))
    assert len(buffers) == 1 and memoryview(buffers[0]).nbytes == big.nbytes
    assert len(data) < 2000  # the array's bytes are not in the pickle
    (b, s), kw = loads_data(data, [bytes(buffers[0])])
    assert np.array_equal(b, big) and np.array_equal(s, small) and list(kw["k"]) == [0, 1, 2, 3, 4]


def test_dill_fallback_for_lambdas_in_data():
    data, _ = dumps_data([lambda: 5])
    assert loads_data(data)[0]() == 5


def test_unpicklable_data_is_named():
    class Bad:
        def __reduce__(self):
            raise TypeError("refuses")
    with pytest.raises(SerializationError, match="the task's arguments"):
        dumps_data(Bad(), "the task's arguments")


def test_a_serialization_error_says_what_and_where_in_one_line():
    """Not a 30-line pickler traceback: the first line names the part that failed."""
    class Holder:
        def __init__(self) -> None:
            self.rows = (i for i in range(3))
    with pytest.raises(SerializationError) as caught:
        dumps_data(((1, [2, Holder()]), {"ok": 3}), "the task's arguments")
    err = caught.value
    assert "(argument 1[1].rows: a generator)" in str(err).splitlines()[0]
    assert err.__cause__ is None and err.__suppress_context__
    with pytest.raises(SerializationError, match="keyword argument 'x': a generator"):
        dumps_data(((), {"x": (i for i in "ab")}), "the task's arguments")
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.culprit == err.culprit
    rows = (i for i in range(3))
    with pytest.raises(SerializationError, match="closure variable 'rows': a generator"):
        FunctionPickler().dumps(lambda: next(rows))


def test_remote_error_keeps_type_and_traceback():
    try:
        square("x")
    except TypeError as exc:
        payload = dumps_error(exc, rank=2, size=4)
    err = loads_error(payload)
    assert type(err) is TypeError
    assert isinstance(err.__cause__, RemoteTraceback)
    assert "rank 2 of 4 on" in str(err.__cause__) and "square" in str(err.__cause__)


def test_remote_error_that_cannot_be_rebuilt_becomes_remote_task_error(monkeypatch):
    # a class importable where the task ran, but not where its future is resolved
    module = types.ModuleType("only_on_the_worker")

    class Private(Exception):
        pass
    Private.__module__ = module.__name__
    Private.__qualname__ = "Private"
    module.Private = Private  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    payload = dumps_error(Private("secret sauce"))
    monkeypatch.delitem(sys.modules, module.__name__)
    err = loads_error(payload)
    assert isinstance(err, RemoteTaskError)
    assert err.type_name.endswith("Private") and err.remote_message == "secret sauce"
    assert pickle.loads(pickle.dumps(err)).type_name == err.type_name


class _Halt(BaseException):
    """A user's own BaseException subclass."""


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


@pytest.mark.parametrize("exc, type_name, code", [
    (SystemExit(3), "SystemExit", 3), (SystemExit(), "SystemExit", None),
    (SystemExit("bye"), "SystemExit", "bye"), (KeyboardInterrupt(), "KeyboardInterrupt", None),
    (GeneratorExit(), "GeneratorExit", None), (_Halt("stop now"), "_Halt", None)])
def test_base_exceptions_of_tasks_come_back_as_task_exit(exc, type_name, code):
    """Whatever BaseException a task raised, its future gets an ordinary exception: a
    SystemExit raised by result() would end the submitting program, one raised in a done
    callback would kill the thread that settles futures."""
    err = loads_error(dumps_error(_raised(exc), rank=1, size=4))
    assert type(err) is TaskExit and isinstance(err, Exception)
    assert err.type_name.endswith(type_name) and err.code == code
    assert type(err.__context__) is type(exc)           # chained to the original ...
    assert isinstance(err.__cause__, RemoteTraceback)   # ... and to its remote traceback
    assert "rank 1 of 4 on" in str(err.__cause__) and "_raised" in str(err.__cause__)
    assert type_name in str(err.__cause__)
    assert type_name in str(err) and "only this task failed" in str(err)
    again = pickle.loads(pickle.dumps(err))            # Parsl may pickle it again
    assert (again.type_name, again.code, str(again)) == (err.type_name, err.code, str(err))


def test_task_exit_code_with_parsl_exceptions_pickling() -> None:
    """Parsl installs tblib's exception pickling, which rebuilds a SystemExit without
    running its __init__ (``code`` None): the exit code is read from its args."""
    import copyreg

    import tblib.pickling_support
    saved = dict(copyreg.dispatch_table)
    tblib.pickling_support.install(SystemExit)
    try:
        err = loads_error(dumps_error(_raised(SystemExit(5))))
    finally:
        copyreg.dispatch_table.clear()
        copyreg.dispatch_table.update(saved)
    assert type(err) is TaskExit and err.code == 5 and "SystemExit(5)" in str(err)
    again = pickle.loads(pickle.dumps(err))
    assert (again.type_name, again.code, str(again)) == (err.type_name, err.code, str(err))


def test_rankpool_errors_survive_pickling():
    """Every error a pool or rank may send back is rebuilt as itself, with its attributes
    (a pool refusing a task it can no longer hold sends ResourceSpecError)."""
    from rankpool import errors
    from rankpool.protocol.starts import StartCause
    samples = [TaskTimeout(3, 1.5), SerializationError("the result", ValueError("v")),
               errors.ResourceSpecError("num_ranks", "too wide"),
               errors.InsufficientRanks(4, 3, 2), errors.StuckRanksError(5, [1], 5.0),
               errors.ManagerLost("0", ["h"], "gone"), errors.VersionMismatch("x", "1", "2"),
               errors.BrokenPool("broken", ValueError("v")), errors.KeyFileError("/k", "bad"),
               errors.RemoteTaskError("m.E", "text", 1, 2, "h"), errors.ExecutorShutdown("s"),
               errors.TaskExit("SystemExit", 2, ""),
               errors.BlockStartFailed("0", "12", StartCause.JOB_ENDED, "srun: error", 2)]
    for exc in samples:
        again = loads_error(dumps_error(exc))
        assert type(again) is type(exc) and str(again) == str(exc)
        assert vars(again) == vars(exc) or isinstance(exc, errors.BrokenPool)


def test_add_note():
    exc = ValueError("x")
    add_note(exc, "one")
    add_note(exc, "two")
    assert exc.__notes__ == ["one", "two"]


def test_error_whose_str_raises_is_still_reported():
    """A rank reports every failure through dumps_error: it must not raise (it used to, on an
    exception whose ``__str__`` raises, and the pool aborted)."""
    class BadStr(Exception):
        def __str__(self):
            raise RuntimeError("no text")

    try:
        raise BadStr()
    except BadStr as exc:
        data = dumps_error(exc, 1, 2)
    again = loads_error(data)
    assert type(again).__name__ == "BadStr"
    assert "str() failed" in error_summary(data)
    assert "rank 1 of 2" in str(again.__cause__)


def test_plain_values_settle_futures_and_a_bad_one_fails_only_its_own():
    """``settle_values``: the front-ends' path for results that are one value each, a batch
    of futures that share one Condition: each gets its own value (a list with
    ``results_all``), a bad pickle fails only its future, a cancelled one stays cancelled,
    a task whose future has gone is passed over, ``wait`` and done-callbacks hear of each."""
    import threading
    from concurrent.futures import FIRST_COMPLETED, wait

    from rankpool.frontends.settling import settle_values
    from rankpool.frontends.task_future import TaskFuture
    cond = threading.Condition()
    ok, whole, bad, gone = (TaskFuture(i, None, cond) for i in (1, 2, 3, 4))
    whole._results_all = True
    gone.cancel()
    called = []
    ok.add_done_callback(lambda f: called.append(f.task_id))
    waiter = threading.Thread(target=lambda: called.append(
        len(wait([whole], timeout=10, return_when=FIRST_COMPLETED).done)))
    waiter.start()
    settle_values(cond, [ok, whole, None, bad, gone], [1, 2, 5, 3, 4],
                  [pickle.dumps({"a": 1}), pickle.dumps(5), pickle.dumps(7), b"not a pickle",
                   pickle.dumps(6)])  # task 5's future has gone: its value is not read
    waiter.join(10)
    assert ok.result(0) == {"a": 1} and whole.result(0) == [5]
    exc = bad.exception(0)
    assert isinstance(exc, SerializationError) and "result of task 3" in str(exc)
    assert gone.cancelled()
    assert sorted(called) == [1, 1]  # ok's callback ran; the waiter saw whole done
    settle_values(cond, [ok], [1], [pickle.dumps("late")])  # a settled future stays as it was
    assert ok.result(0) == {"a": 1}


def test_a_batch_of_none_values_settles_as_the_values_one_by_one_would():
    """Every task returned None (the values are one bytes object): each future gets None, a
    list of it with ``results_all``; a cancelled or settled future stays as it was, a task
    whose future has gone is passed over, a waiter and done-callbacks hear of each."""
    import threading
    from concurrent.futures import ALL_COMPLETED, wait

    from rankpool.frontends.settling import settle_values
    from rankpool.frontends.task_future import TaskFuture
    from rankpool.task.serialize import NONE
    cond = threading.Condition()
    plain, whole, cancelled, settled = (TaskFuture(i, None, cond) for i in (1, 2, 3, 4))
    whole._results_all = True
    cancelled.cancel()
    settled.set_result("earlier")
    called = []
    plain.add_done_callback(lambda f: called.append(f.task_id))
    waiter = threading.Thread(target=lambda: called.append(
        len(wait([plain, whole], timeout=10, return_when=ALL_COMPLETED).done)))
    waiter.start()
    value = bytes(NONE)
    settle_values(cond, [plain, whole, None, cancelled, settled], [1, 2, 5, 3, 4], [value] * 5)
    waiter.join(10)
    assert plain.result(0) is None and whole.result(0) == [None]
    assert cancelled.cancelled() and settled.result(0) == "earlier"
    assert sorted(called) == [1, 2]  # plain's callback ran; the waiter saw both done
