"""Runs of a received task batch sent on as slices of it (``protocol.task_slices``)."""

from __future__ import annotations

import random

from rankpool.protocol.batches import Task, decode_tasks, encode_tasks
from rankpool.protocol.task_slices import sliced
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


def _received(tasks: list[Task]) -> tuple[list[bytes], list[Task]]:
    """The batch's message as bytes, and its tasks as the interchange decodes them."""
    message = [bytes(f) for f in encode_tasks(tasks)]
    decoded = decode_tasks(decode_header(message[0]), message[1:], message=message)
    return message, decoded


def _view(tasks: list[Task]) -> list[tuple]:
    return [(t.task_id, t.spec, t.fn_digest, bytes(t.fn), bytes(t.data),
             [bytes(b) for b in t.buffers]) for t in tasks]


def _unsliced(messages: list[tuple[int, list]]) -> list[Task]:
    out: list[Task] = []
    for count, frames in messages:
        frames = [bytes(f) for f in frames]
        back = decode_tasks(decode_header(frames[0]), frames[1:])
        assert len(back) == count
        out += back
    return out


def test_runs_of_batches_decode_to_exactly_their_tasks() -> None:
    rng = random.Random(7)
    originals = [_batch(0, 37, rng), _batch(100, 5, rng), _batch(200, 64, rng)]
    received = [_received(b)[1] for b in originals]
    for _ in range(200):
        wanted: list[Task] = []
        expected: list[Task] = []
        for batch, orig in zip(received, originals):
            if rng.random() < 0.5:
                i = rng.randrange(len(batch))
                j = rng.randint(i + 1, len(batch))
                wanted += batch[i:j]
                expected += orig[i:j]
        if not wanted:
            continue
        messages = sliced(wanted, 8)
        assert messages is not None and len(messages) <= 3
        assert _view(_unsliced(messages)) == _view(expected)


def test_a_whole_batch_leaves_as_it_came_and_a_cut_one_carries_only_its_slice() -> None:
    rng = random.Random(3)
    message, tasks = _received(_batch(0, 20, rng))
    [(count, frames)] = sliced(tasks, 4)  # type: ignore[misc]
    assert count == 20 and frames is message
    [(count, frames)] = sliced(tasks[5:9], 4)  # type: ignore[misc]
    header = decode_header(frames[0])
    assert count == 4 and header["n"] == 4 and header["f"] and header["s"]
    assert sum(map(len, frames[1:])) < sum(map(len, message[1:]))
    assert len(frames) - 2 == sum(len(t.buffers) for t in tasks[5:9])


def test_scattered_tasks_or_tasks_without_their_batch_are_not_sliced() -> None:
    rng = random.Random(5)
    _, tasks = _received(_batch(0, 12, rng))
    assert sliced(tasks[::2], 4) is None  # six runs of one task
    assert sliced(tasks[::2], 6) is not None
    assert sliced(list(reversed(tasks[:3])), 4) is not None  # three runs, each its own slice
    plain = _batch(50, 3, rng)  # never received: no batch to slice
    assert sliced(plain, 4) is None and sliced(tasks[:2] + plain, 4) is None
    assert sliced([], 4) == []
