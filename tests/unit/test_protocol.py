"""The wire protocol: batches of tasks and results, control messages, version checks."""

from __future__ import annotations

import pytest
from raw_batches import raw_results, raw_tasks

from rankpool._version import __version__
from rankpool.errors import ProtocolError
from rankpool.protocol import messages as protocol
from rankpool.protocol.batches import Task, decode_tasks, encode_rows, encode_tasks, task_ids
from rankpool.protocol.messages import Register, check_versions, decode_message
from rankpool.protocol.result_batches import (
    Outcome,
    Result,
    check_results,
    decode_results,
    encode_results,
    result_ids,
    results_header,
    split_results,
)
from rankpool.protocol.wire import decode_header, encode_header, message_size, under_cap
from rankpool.task.resources import DEFAULT_SPEC, parse_spec


def _frames(frames):
    return [bytes(f) for f in frames]


def test_task_batch_round_trip_shares_function_and_spec():
    wide = parse_spec({"num_ranks": 3, "priority": 2})
    tasks = [Task(i, DEFAULT_SPEC if i % 2 else wide, b"\x01" * 16, b"FN", f"data{i}".encode())
             for i in range(6)]
    tasks.append(Task(99, wide, b"\x02" * 16, b"OTHER", b"d", [b"B" * 10, b"C" * 3]))
    frames = _frames(encode_tasks(tasks))
    header = decode_header(frames[0])
    assert len(header["f"]) == 2 and len(header["s"]) == 2   # tables, not per-task copies
    assert frames[1].count(b"FN") == 1 and header["n"] == 7
    assert task_ids(header, frames[1:]) == [0, 1, 2, 3, 4, 5, 99]
    back = decode_tasks(header, frames[1:])
    assert [(t.task_id, t.spec, t.fn_digest, bytes(t.fn), bytes(t.data)) for t in back] == \
        [(t.task_id, t.spec, t.fn_digest, bytes(t.fn), bytes(t.data)) for t in tasks]
    assert [bytes(b) for b in back[-1].buffers] == [b"B" * 10, b"C" * 3]
    copied = decode_tasks(header, frames[1:], copy=True)
    assert all(type(t.data) is bytes for t in copied) and copied[0].fn is copied[2].fn


def test_task_batches_of_random_mixes_round_trip_with_tables_in_order_of_first_use():
    """Functions and specs interleaved at random, equal specs as distinct objects, buffers on
    some tasks: the batch decodes back to its tasks, each function and each spec value has
    one table entry, in order of first use."""
    import random
    rng = random.Random(5)
    fns = [(bytes([k]) * 16, f"FN{k}".encode()) for k in range(3)]
    values = [{}, {"num_ranks": 2}, {"priority": 1}]
    for _ in range(50):
        tasks = []
        for i in range(rng.randint(0, 40)):
            digest, fn = rng.choice(fns)
            spec = parse_spec(rng.choice(values))  # a new object each time
            bufs = [bytes([i % 256]) * rng.randint(1, 9) for _ in range(rng.choice((0, 0, 2)))]
            tasks.append(Task(i, spec, digest, fn, rng.randbytes(rng.randint(0, 5)), bufs))
        frames = _frames(encode_tasks(tasks))
        header = decode_header(frames[0])
        assert header["n"] == len(tasks)
        first_fns = list(dict.fromkeys(t.fn_digest for t in tasks))
        assert [bytes.fromhex(d) for d, _ in header["f"]] == first_fns
        assert header["s"] == [s.to_wire() for s in dict.fromkeys(t.spec for t in tasks)]
        back = decode_tasks(header, frames[1:])
        assert [(t.task_id, t.spec, t.fn_digest, bytes(t.fn), bytes(t.data),
                 [bytes(b) for b in t.buffers]) for t in back] == \
            [(t.task_id, t.spec, t.fn_digest, t.fn, t.data, t.buffers) for t in tasks]
        # the front-end's rows, given flat, make the same message
        rows = [f for t in tasks for f in (t.task_id, t.spec, t.fn_digest, t.fn, t.data,
                                           t.buffers)]
        assert _frames(encode_rows(rows)) == frames


def test_rows_over_the_cap_are_halved_at_row_boundaries():
    rows = [f for i in range(10) for f in (i, DEFAULT_SPEC, b"\x01" * 16, b"FN", b"x" * 100, ())]
    cap = message_size(encode_rows(rows[:6 * 3]))  # three tasks fit, four do not
    parts = under_cap(rows, encode_rows, cap, 6)
    assert all(len(part) % 6 == 0 and message_size(frames) <= cap for part, frames in parts)
    ids = [task_ids(decode_header(frames[0]), _frames(frames)[1:]) for _, frames in parts]
    assert [i for part in ids for i in part] == list(range(10)) and len(parts) == 4
    one = rows[:6]  # a single task is sent as it is, whatever the cap
    assert under_cap(one, encode_rows, 1, 6) == [(one, encode_rows(one))]


def test_result_batch_round_trip_and_compact_records():
    results = [Result(1, [Outcome(0, True, b"v1")]),
               Result(2, [Outcome(0, True, b"a", [b"BIG"]), Outcome(1, True, b"b")]),
               Result(3, [Outcome(1, False, b"err")])]
    frames = _frames(encode_results(results))
    header = decode_header(frames[0])
    assert header == {"k": "results", "n": 4}  # one row per outcome, in the blob
    assert result_ids(header, frames[1:]) == [1, 2, 3]
    check_results(header, frames[1:])
    back = decode_results(header, frames[1:])
    assert [(r.task_id, [(o.rank, o.ok, bytes(o.data), [bytes(b) for b in o.buffers])
                         for o in r.outcomes]) for r in back] == \
        [(1, [(0, True, b"v1", [])]), (2, [(0, True, b"a", [b"BIG"]), (1, True, b"b", [])]),
         (3, [(1, False, b"err", [])])]
    assert not back[2].ok and back[0].ok


@pytest.mark.parametrize("odd", [
    None,
    Result(9, [Outcome(0, False, b"err")]),                            # an error
    Result(9, [Outcome(0, True, b"a", [b"BIG"])]),                     # a buffer
    Result(9, [Outcome(0, True, b"a"), Outcome(1, True, b"b")]),       # results="all"
])
def test_split_results_gives_plain_values_only_when_every_result_is_one(odd):
    results = [Result(i, [Outcome(0, True, b"v%d" % i)]) for i in range(3)]
    if odd is not None:
        results.insert(1, odd)
    header, rest = _split(_frames(encode_results(results)))
    (ids, datas), full = split_results(header, rest)
    if odd is None:
        assert full == [] and ids == [0, 1, 2] and list(map(bytes, datas)) == [b"v0", b"v1",
                                                                             b"v2"]
    else:
        assert not ids and not datas and [r.task_id for r in full] == [0, 9, 1, 2]
        assert full == decode_results(header, rest)


def test_values_that_are_all_the_same_bytes_split_as_one_object():
    """A flood of tasks that return None: their values are one bytes object, not a slice
    each; values of one length that differ are sliced as any others."""
    same = encode_results([], ([1, 2, 3], [b"\x80\x05N.", b"\x80\x05N.", b"\x80\x05N."]))
    header, rest = _split(_frames(same))
    (ids, datas), full = split_results(header, rest)
    assert (ids, datas, full) == ([1, 2, 3], [b"\x80\x05N."] * 3, [])
    assert type(datas[0]) is bytes and datas[0] is datas[2]
    header, rest = _split(_frames(encode_results([], ([1, 2], [b"ab", b"ac"]))))
    (ids, datas), _ = split_results(header, rest)
    assert list(map(bytes, datas)) == [b"ab", b"ac"]


def test_values_encode_as_results_of_one_successful_outcome_each():
    """Rank 0 keeps a flood's results as columns of ids and values: they are rows like any
    result's."""
    values = ([5, 6], [b"v5", b""])
    as_results = [Result(t, [Outcome(0, True, d)]) for t, d in zip(*values)]
    odd = Result(9, [Outcome(0, False, b"err")])
    header, rest = _split(_frames(encode_results([odd], values)))
    assert header == {"k": "results", "n": 3} and check_results(header, rest) == [5, 6, 9]
    assert decode_results(header, rest) == as_results + [odd]
    header, rest = _split(_frames(encode_results([], values)))
    (ids, datas), full = split_results(header, rest)
    assert full == [] and (ids, list(map(bytes, datas))) == values
    assert _frames(encode_results([], values)) == _frames(encode_results(as_results))


def _split(frames):
    return decode_header(frames[0]), frames[1:]


@pytest.mark.parametrize("frames", [
    [b'{"k":"tasks"}', b""],                                          # no count, no tables
    raw_tasks([[1, 0, 0, 0, 0]], n=2),                                # records past the blob
    raw_tasks([[1, 0, 0, 0, 0]], fn_table=[["zz", 1]]),                # digest not hex
    raw_tasks([], fns=[("01", b"x")], fn_table=[["01", 5]]),           # function past the blob
    raw_tasks([[1, 1, 0, 0, 0]]),                                     # no such function
    raw_tasks([[1, 0, 1, 0, 0]]),                                     # no such spec
    raw_tasks([[1, 0, 0, -1, 0]], data=b"x"),                         # negative length
    raw_tasks([[1, 0, 0, 9, 0]], data=b"xy"),                         # data past the blob
    raw_tasks([[1, 0, 0, 1, 0]], data=b"xy"),                         # blob bytes nobody names
    raw_tasks([[1, 0, 0, 0, 1]]),                                     # a missing buffer frame
    raw_tasks([[1, 0, 0, 0, 0]], extra=[b"extra"]),                   # a frame nobody names
    raw_tasks([], specs=[[0, 1, 1, False, 0, None]]),                 # bad spec
    # one bad value in a column that is not one value throughout
    raw_tasks([[1, 0, 0, 0, 0], [2, 1, 0, 0, 0]]),                    # no such function
    raw_tasks([[1, 0, 0, 0, 0], [2, 0, 1, 0, 0]]),                    # no such spec
    raw_tasks([[1, 0, 0, 1, 0], [2, 0, 0, -1, 0]]),                   # negative length
    raw_tasks([[1, 0, 0, 0, 1], [2, 0, 0, 0, -1]]),                   # negative buffer count
])
def test_malformed_task_batches_are_protocol_errors(frames):
    with pytest.raises(ProtocolError):
        decode_tasks(*_split(frames))


@pytest.mark.parametrize("frames", [
    raw_results([[1, 0, 1, 10, 0]], b"x"),                            # past the blob
    raw_results([[1, 0, 1, 1, 1]], b"x"),                             # a missing buffer frame
    raw_results([[1, 0, 1, 1, 0]], b"x", n=3),                        # rows past the blob
    raw_results([[1, 0, 7, 1, 0]], b"x"),                             # unknown flags
    raw_results([[1, -1, 1, 1, 0]], b"x"),                            # negative rank
    raw_results([[1, 0, 3, 1, 0]], b"x"),                             # continues nothing
    raw_results([[1, 0, 1, 0, 0], [2, 1, 3, 1, 0]], b"x"),            # continues another task
    raw_results([[1, 0, 1, 1, 0]], b"x", extra=[b"extra"]),           # a frame nobody names
    raw_results([[1, 0, 1, 1, 0]], b"xy"),                            # blob bytes nobody names
    [b'{"k":"results","n":"1"}', b""],                                # count not an integer
    raw_results([[1, 0, 1, 1, 0], [2, -1, 1, 0, 0]], b"x"),           # a negative rank
    raw_results([[1, 0, 1, 2, 0], [2, 0, 1, -1, 0]], b"x"),           # a negative length
])
def test_malformed_result_batches_are_protocol_errors(frames):
    header, rest = _split(frames)
    with pytest.raises(ProtocolError):
        decode_results(header, rest)
    with pytest.raises(ProtocolError):
        split_results(header, rest)
    with pytest.raises(ProtocolError):
        check_results(header, rest)


def test_raw_batches_that_are_well_formed_decode():
    """The builders above write what the encoders write, so each malformed case differs from a
    readable batch only where it says."""
    header, rest = _split(raw_tasks([[5, 0, 0, 2, 0]], data=b"ab"))
    (task,) = decode_tasks(header, rest)
    assert (task.task_id, bytes(task.fn), bytes(task.data)) == (5, b"F", b"ab")
    header, rest = _split(raw_results([[5, 0, 1, 1, 0], [5, 1, 3, 1, 0]], b"xy"))
    (result,) = decode_results(header, rest)
    assert [(o.rank, bytes(o.data)) for o in result.outcomes] == [(0, b"x"), (1, b"y")]


def test_headers_and_messages():
    for bad in (b"not json", b"[1, 2]", b'{"no": "kind"}', b"\xff\xfe"):
        with pytest.raises(ProtocolError):
            decode_header(bad)
    with pytest.raises(ProtocolError, match="unknown message kind"):
        decode_message({"k": "launch_missiles"})
    with pytest.raises(ProtocolError, match="missing field"):
        decode_message({"k": "stop"})
    with pytest.raises(ProtocolError, match="bad value"):
        decode_message({"k": "stop", "reason": 5})
    msg = protocol.Stop("done")
    assert decode_message(decode_header(msg.encode()[0])) == msg

    # garbage is refused every time: a refused header is never kept
    for _ in range(2):
        with pytest.raises(ProtocolError):
            decode_header(b'{"k": "x"')


def test_a_header_seen_before_decodes_to_a_copy_of_the_same_value():
    frame = encode_header({"k": "results", "n": 3})
    first = decode_header(frame)
    first["n"] = 99  # a caller changing its header changes nobody else's
    again = decode_header(memoryview(frame))
    assert again == {"k": "results", "n": 3} and again is not first
    big = encode_header({"k": "tasks", "pad": "x" * 1000})  # not kept: parsed each time
    assert decode_header(big) == decode_header(big) == {"k": "tasks", "pad": "x" * 1000}
    # a control message's lists are handed on as they are: its header is never shared
    cancel = protocol.Cancel([1, 2]).encode()[0]
    decode_header(cancel)["task_ids"].append(3)
    assert decode_message(decode_header(cancel)) == protocol.Cancel([1, 2])


def test_kept_headers_are_the_headers_built_field_by_field():
    assert results_header(7) == encode_header({"k": "results", "n": 7})
    wide = parse_spec({"num_ranks": 3, "priority": 2})
    for spec in (DEFAULT_SPEC, wide):
        tasks = [Task(i, spec, b"\x01" * 16, b"FN", b"d") for i in range(3)]
        header = decode_header(encode_tasks(tasks)[0])
        assert header == {"k": "tasks", "n": 3, "f": [["01" * 16, 2]], "s": [spec.to_wire()]}
        # a mix takes the general path: the same tables, in order of first use
        mixed = tasks + [Task(9, DEFAULT_SPEC if spec is wide else wide, b"\x02" * 16, b"G", b"")]
        header = decode_header(encode_tasks(mixed)[0])
        assert header["f"] == [["01" * 16, 2], ["02" * 16, 1]] and header["n"] == 4
        assert header["s"][0] == spec.to_wire() and len(header["s"]) == 2


def _register(**over):
    fields = dict(protocol=protocol.PROTOCOL_VERSION, rankpool=__version__,
                  python=protocol.PYTHON_VERSION, block_id="b", pool_id="p", hosts=["h"],
                  node_ranks=[2], widest=2, ranks_per_node=2)
    fields.update(over)
    return Register(**fields)


def test_version_checks_name_both_sides():
    assert check_versions(_register(), __version__) == ""
    text = check_versions(_register(rankpool="0.0.1"), __version__)
    assert "rankpool version" in text and "0.0.1" in text and __version__ in text
    assert "Python version" in check_versions(_register(python="2.7"), __version__)
    assert "protocol version" in check_versions(_register(protocol=999), __version__)


def test_lost_and_refused_carry_a_typed_cause():
    lost = protocol.Lost("b1", ["h"], "no heartbeat for 12.0 s", [3, 4],
                         protocol.LostCause.NO_HEARTBEAT)
    header = decode_header(lost.encode()[0])
    assert header["cause"] == "no-heartbeat"  # the enum's value on the wire
    back = decode_message(header)
    assert back == lost and back.cause is protocol.LostCause.NO_HEARTBEAT
    refused = protocol.Refused("b1", "p", ["h"], "why", "", "", "", protocol.RefusalCause.SHAPE)
    assert decode_message(decode_header(refused.encode()[0])).cause is protocol.RefusalCause.SHAPE
    for bad in ("pool drained", 3, None):
        with pytest.raises(ProtocolError, match="'cause' has bad value"):
            decode_message({**header, "cause": bad})
    with pytest.raises(ProtocolError, match="missing field 'cause'"):
        decode_message({k: v for k, v in header.items() if k != "cause"})


def test_only_pools_that_registered_count_as_started():
    started = {c for c in protocol.LostCause if c.had_registered}
    assert started == set(protocol.LostCause) - {protocol.LostCause.REFUSED,
                                                 protocol.LostCause.MALFORMED_TASKS}
