"""Runs of a received task batch sent on as slices of it (``protocol.task_slices``)."""

from __future__ import annotations

import random

from rankpool.protocol.batches import Received, Task, decode_tasks, encode_tasks, receive_tasks
from rankpool.protocol.task_slices import Run, runs_of, sliced
from rankpool.protocol.wire import decode_header
from rankpool.task.resources import DEFAULT_SPEC, parse_spec

WIDE = parse_spec({"num_ranks": 2, "priority": 1})


def _batch(first: int, n: int, rng: random.Random) -> list[Task]:
    """Tasks of two functions and two specs, some with buffer frames, data of varied size."""
    tasks = []
    for i in range(first, first + n):
        fn = rng.choice([(b"\x01" * 8, b"FN-ONE"), (b"\x02" * 8, b"FN-TWO-LONGER")])
        buffers = [bytes([i % 251]) * rng.randint(1, 40) for _ in range(rng.randint(0, 2))]
        tasks.append(Task(i, rng.choice([DEFAULT_SPEC, WIDE]), fn[0], fn[1],
                          f"data-{i}".encode() * rng.randint(0, 5), buffers))
    return tasks


def _received(tasks: list[Task], keep: bool = True) -> tuple[list[bytes], Received]:
    """The batch's message as bytes, and the batch as the interchange receives it."""
    message = [bytes(f) for f in encode_tasks(tasks)]
    return message, receive_tasks(decode_header(message[0]), message[1:],
                                  message if keep else None)


def _span(batch: Received, i: int, j: int) -> list[Run]:
    """Runs of records ``i`` to ``j`` (exclusive) of a batch."""
    return runs_of(batch, set(range(i)) | set(range(j, batch.n)))


def _view(tasks: list[Task]) -> list[tuple]:
    return [(t.task_id, t.spec, t.fn_digest, bytes(t.fn), bytes(t.data),
             [bytes(b) for b in t.buffers]) for t in tasks]


def _unsliced(messages: list[tuple[int, list]]) -> list[Task]:
    out: list[Task] = []
    for _, frames in messages:
        frames = [bytes(f) for f in frames]
        out += decode_tasks(decode_header(frames[0]), frames[1:])
    return out


def test_a_batch_received_builds_the_tasks_it_was_encoded_from() -> None:
    rng = random.Random(11)
    tasks = _batch(0, 50, rng)
    _, batch = _received(tasks)
    assert batch.ids == [t.task_id for t in tasks]
    assert _view(batch.tasks(0, 50)) == _view(tasks)
    assert _view(batch.tasks(7, 19, copy=True)) == _view(tasks[7:19])
    assert all(isinstance(t.data, bytes) for t in batch.tasks(0, 50, copy=True))


def test_runs_of_a_batch_share_a_spec_and_leave_out_what_is_skipped() -> None:
    rng = random.Random(13)
    tasks = _batch(0, 40, rng)
    _, batch = _received(tasks)
    runs = runs_of(batch, {3, 4, 30})
    assert [i for r in runs for i in r.ids] == [t.task_id for t in tasks if t.task_id not in
                                                 (3, 4, 30)]
    for run in runs:
        assert {tasks[k].spec for k in range(run.start, run.start + len(run.ids))} == {run.spec}
        assert _view(run.tasks()) == _view(tasks[run.start:run.start + len(run.ids)])
    plain = [Task(i, DEFAULT_SPEC, b"\x01" * 8, b"FN", b"d") for i in range(9)]
    [whole] = runs_of(_received(plain)[1])
    assert whole.ids == list(range(9)) and whole.start == 0


def test_a_run_cut_or_thinned_keeps_its_place_in_the_batch() -> None:
    plain = [Task(i, DEFAULT_SPEC, b"\x01" * 8, b"FN", b"d%d" % i) for i in range(10, 20)]
    [run] = runs_of(_received(plain)[1])
    head = run.take(3)
    assert (head.start, head.ids) == (0, [10, 11, 12]) and (run.start, run.ids[0]) == (3, 13)
    pieces = run.without({0, 2, 3})  # tasks 13, 15 and 16 taken out
    assert [(at, p.start, p.ids) for at, p in pieces] == [(1, 4, [14]), (4, 7, [17, 18, 19])]
    assert [bytes(t.data) for t in pieces[1][1].tasks()] == [b"d17", b"d18", b"d19"]


def test_runs_of_batches_decode_to_exactly_their_tasks() -> None:
    rng = random.Random(7)
    originals = [_batch(0, 37, rng), _batch(100, 5, rng), _batch(200, 64, rng)]
    received = [_received(b)[1] for b in originals]
    for _ in range(200):
        wanted: list[Run] = []
        expected: list[Task] = []
        for batch, orig in zip(received, originals):
            if rng.random() < 0.5:
                i = rng.randrange(batch.n)
                j = rng.randint(i + 1, batch.n)
                wanted += _span(batch, i, j)
                expected += orig[i:j]
        if not wanted:
            continue
        messages = sliced(wanted, 8)
        assert messages is not None and len(messages) <= 3  # a batch's runs join up
        assert sum(count for count, _ in messages) == len(wanted)
        assert _view(_unsliced(messages)) == _view(expected)


def test_a_whole_batch_leaves_as_it_came_and_a_cut_one_carries_only_its_slice() -> None:
    rng = random.Random(3)
    tasks = _batch(0, 20, rng)
    message, batch = _received(tasks)
    [(_, frames)] = sliced(_span(batch, 0, 20), 4)  # type: ignore[misc]
    assert frames is message
    [(_, frames)] = sliced(_span(batch, 5, 9), 4)  # type: ignore[misc]
    header = decode_header(frames[0])
    assert header["n"] == 4 and header["f"] and header["s"]
    assert sum(map(len, frames[1:])) < sum(map(len, message[1:]))
    assert len(frames) - 2 == sum(len(t.buffers) for t in tasks[5:9])


def test_scattered_runs_or_runs_without_their_batch_are_not_sliced() -> None:
    rng = random.Random(5)
    _, batch = _received(_batch(0, 12, rng))
    every_other = runs_of(batch, set(range(1, 12, 2)))  # six runs of one task
    assert sliced(every_other, 4) is None
    assert sliced(every_other, 6) is not None
    backwards = [r for k in (2, 1, 0) for r in _span(batch, k, k + 1)]
    assert len(sliced(backwards, 4) or []) == 3  # three runs, each its own slice
    _, unkept = _received(_batch(50, 3, rng), keep=False)  # its message was not kept
    assert sliced(runs_of(unkept), 4) is None
    assert sliced(_span(batch, 0, 2) + runs_of(unkept), 4) is None
    assert sliced([], 4) == []
