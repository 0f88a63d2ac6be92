"""rankpool.frontends.progress: counts, terminal redraws, occasional lines elsewhere, the three
waits."""

from __future__ import annotations

import io
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from rankpool.frontends import progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def finished(value: object = None, exc: BaseException | None = None) -> Future:
    f: Future = Future()
    if exc is None:
        f.set_result(value)
    else:
        f.set_exception(exc)
    return f


def last_line(out: io.StringIO) -> str:
    return out.getvalue().splitlines()[-1]


def test_counts_done_and_failed_and_cancelled():
    cancelled: Future = Future()
    cancelled.cancel()
    cancelled.set_running_or_notify_cancel()           # what an executor does with a cancelled task
    futures = [finished(1), finished(exc=ValueError()), cancelled, finished(2)]
    out = io.StringIO()
    assert progress.wait(futures, stream=out) == progress.Counts(done=2, failed=2)
    assert last_line(out).startswith("tasks: 4/4, 2 done, 2 failed (100%, ")


def test_without_terminal_prints_quarters_and_a_final_line():
    out, clock = io.StringIO(), Clock()
    with progress.Progress(8, label="jobs", stream=out, clock=clock) as bar:
        for i in range(8):
            clock.now += 0.5
            bar.update(ok=i != 3)
    lines = out.getvalue().splitlines()
    # the first to finish, each quarter, and the end
    assert [line.split(",")[0] for line in lines] == ["jobs: 1/8", "jobs: 2/8", "jobs: 4/8",
                                                       "jobs: 6/8", "jobs: 8/8"]
    assert lines[-1] == "jobs: 8/8, 7 done, 1 failed (100%, 4.0 s)"
    assert "\r" not in out.getvalue()


def test_without_terminal_prints_at_least_every_interval():
    out, clock = io.StringIO(), Clock()
    bar = progress.Progress(1000, stream=out, clock=clock, interval=10)
    for _ in range(30):
        clock.now += 1
        bar.update()
    bar.close()
    assert len(out.getvalue().splitlines()) == 4       # at 1 s (the first), 11 s, 21 s, close


def test_terminal_redraws_in_place_and_ends_the_line():
    out, clock = Tty(), Clock()
    with progress.Progress(4, stream=out, clock=clock) as bar:
        for _ in range(4):
            clock.now += 1
            bar.update()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    frames = [f.rstrip() for f in text.rstrip("\n").split("\r") if f]
    assert frames[0] == "[........................] tasks: 0/4, 0 done, 0 failed (0.0 s)"
    assert frames[-1] == "[########################] tasks: 4/4, 4 done, 0 failed (4.0 s)"
    assert len(frames) == 6                            # opened, 4 updates, closed


def test_terminal_redraws_at_most_every_tenth_of_a_second():
    out, clock = Tty(), Clock()
    bar = progress.Progress(100, stream=out, clock=clock)
    for _ in range(100):
        clock.now += 0.01
        bar.update()
    assert 9 <= out.getvalue().count("\r") <= 12


def test_show_false_counts_but_draws_nothing():
    out = io.StringIO()
    assert progress.wait([finished(1), finished(exc=KeyError())], stream=out, show=False) == (1, 1)
    assert out.getvalue() == ""


def test_empty_and_closed_bars():
    out = io.StringIO()
    assert progress.wait([], stream=out) == (0, 0)
    assert last_line(out).startswith("tasks: 0/0, 0 done, 0 failed (100%")
    bar = progress.Progress(1, stream=out)
    bar.close()
    bar.close()
    bar.update()                                       # after close: ignored
    assert bar.counts == (0, 0)
    with pytest.raises(ValueError):
        progress.Progress(-1)


def test_as_completed_yields_in_finishing_order():
    gates = [threading.Event() for _ in range(3)]
    order = [2, 0, 1]
    out = io.StringIO()
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(g.wait, 10) for g in gates]
        gates[order[0]].set()
        seen = []
        for f in progress.as_completed(futures, stream=out, label="waits"):
            seen.append(futures.index(f))
            if len(seen) < 3:
                gates[order[len(seen)]].set()
    assert seen == order
    assert last_line(out).startswith("waits: 3/3, 3 done, 0 failed")


def test_as_completed_closes_the_bar_when_the_loop_breaks():
    out = io.StringIO()
    for _ in progress.as_completed([finished(1), finished(2)], stream=out):
        break
    assert last_line(out).startswith("tasks: 1/2, 1 done, 0 failed")


def test_as_completed_timeout():
    out = io.StringIO()
    with pytest.raises(TimeoutError):
        for _ in progress.as_completed([Future()], timeout=0.05, stream=out):
            pass
    assert last_line(out).startswith("tasks: 0/1")


def test_bar_counts_futures_finished_on_other_threads():
    out = io.StringIO()
    futures = [Future() for _ in range(20)]
    bar = progress.Progress(20, stream=out)
    for f in futures:
        bar.add(f)
    threads = [threading.Thread(target=f.set_result, args=(1,)) for f in futures[:15]]
    threads += [threading.Thread(target=f.set_exception, args=(OSError(),)) for f in futures[15:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bar.close()
    assert bar.counts == (15, 5)


def test_map_keeps_input_order_and_counts_failures():
    def half(x: int) -> float:
        if x == 3:
            raise ZeroDivisionError(x)
        return x / 2

    with ThreadPoolExecutor(4) as pool:
        out = io.StringIO()
        assert list(progress.map(pool, pow, range(10), [2] * 10, stream=out)) == \
            [i * i for i in range(10)]
        assert last_line(out).startswith("tasks: 10/10, 10 done, 0 failed")
        out = io.StringIO()
        results = progress.map(pool, half, range(5), stream=out)
        assert [next(results) for _ in range(3)] == [0, 0.5, 1]
        with pytest.raises(ZeroDivisionError):
            next(results)
    assert ", 1 failed" in last_line(out)


def test_map_left_early_cancels_what_has_not_started():
    hold, started = threading.Event(), threading.Event()

    def task(i: int) -> int:
        if i == 1:
            started.set()
            hold.wait(10)
        return i

    out = io.StringIO()
    with ThreadPoolExecutor(1) as pool:
        try:
            results = progress.map(pool, task, range(4), stream=out)
            assert next(results) == 0
            assert started.wait(10)
            results.close()                            # task 1 runs on; tasks 2 and 3 are cancelled
            assert last_line(out).startswith("tasks: 3/4, 1 done, 2 failed")
        finally:
            hold.set()


def test_without_terminal_the_last_line_is_printed_once():
    out, clock = io.StringIO(), Clock()
    with progress.Progress(2, stream=out, clock=clock, interval=1) as bar:
        for _ in range(2):
            clock.now += 5                             # past the interval at every update
            bar.update()
    assert out.getvalue().splitlines() == ["tasks: 1/2, 1 done, 0 failed (50%, 5.0 s)",
                                           "tasks: 2/2, 2 done, 0 failed (100%, 10.0 s)"]
