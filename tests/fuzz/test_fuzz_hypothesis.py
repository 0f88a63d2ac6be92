"""Structured fuzz with hypothesis: headers built from the protocol's own kinds and field names.

Where :mod:`test_fuzz_handlers` damages valid messages, these build headers that parse
as JSON and name real kinds and fields, with values of every JSON type, batches whose record
tables have the right width and wrong contents (and counts near the right one), and payload
frames of any count, so the checks after
``decode_header`` are what gets exercised. Each example is a short conversation, delivered to
a fresh target, so hypothesis can shrink a failure to the message that causes it. The default
suite runs 100 examples per target; ``RANKPOOL_SLOW=1`` runs 2,000.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from fuzz_checks import Report, run
from fuzz_messages import FIELDS, KINDS, Case
from fuzz_targets import CLIENT_ERRORS, ClientTarget, InterchangeTarget, PoolTarget
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rankpool.protocol.wire import pack_ints

SLOW = os.environ.get("RANKPOOL_SLOW") == "1"
EXAMPLES = 2_000 if SLOW else 100
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not SLOW,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ints = st.one_of(st.integers(-3, 70), st.integers(-2**64, 2**64),
                 st.sampled_from([2**31, 2**63, 10**400, -10**30]))
leaves = st.one_of(st.none(), st.booleans(), ints, st.floats(allow_nan=True),
                   st.text(max_size=10), st.sampled_from(KINDS))
values = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=6),
    st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=5)), inner, max_size=5)),
    max_leaves=12)
#: record table entries: 64-bit integers, often task ids the target has in flight and lengths
#: near the blob's, so records get far in
int64 = st.one_of(st.integers(-3, 70), st.integers(-2**63, 2**63 - 1),
                  st.sampled_from([2**31, 2**63 - 1, -2**63]))
in_flight = st.integers(1, 20) | int64
lengths = st.integers(-4, 24) | int64
small = st.integers(-1, 3) | int64
task_rows = st.lists(st.tuples(in_flight, st.integers(-1, 2), st.integers(-1, 3), lengths,
                               small), max_size=5)
result_rows = st.lists(st.tuples(in_flight, small, st.integers(-1, 4), lengths, small),
                       max_size=5)
fn_tables = st.lists(st.tuples(st.sampled_from(["ab" * 4, "zz", "", "0"]), lengths).map(list)
                     | values, max_size=3)
spec_tables = st.lists(st.none() | st.tuples(st.integers(0, 5), st.none() | ints, st.none() | ints,
                                              st.booleans() | leaves, ints, st.none() | ints
                                              | st.floats(allow_nan=True)).map(list)
                       | values, max_size=3)


def batch(header: dict[str, Any], rows: list[tuple[int, ...]], count: Any, tail: bytes,
          extra: list[bytes]) -> list[bytes]:
    """A batch message: ``count`` is the record count off by -1..1, or any JSON value."""
    n = len(rows) + count if type(count) is int else count
    return [json.dumps({**header, "n": n}, separators=(",", ":")).encode(),
            pack_ints([v for r in rows for v in r]) + tail, *extra]


counts = st.integers(-1, 1) | values
tails = st.binary(max_size=24)
buffers = st.lists(st.binary(max_size=8), max_size=3)
batches = st.one_of(
    st.builds(batch, st.fixed_dictionaries({"k": st.just("tasks"), "f": fn_tables,
                                            "s": spec_tables}),
              task_rows, counts, tails, buffers),
    st.builds(batch, st.just({"k": "results"}), result_rows, counts, tails, buffers))
headers = st.fixed_dictionaries({"k": st.sampled_from(KINDS) | st.text(max_size=6)},
                                optional={f: values for f in FIELDS})
dumped = headers.map(lambda h: json.dumps(h, separators=(",", ":")).encode())
#: JSON nested deeper than the parser's recursion limit (or just under it)
deep = st.builds(lambda kind, depth: b'{"k":"%s","n":%s%s}' % (kind.encode(), b"[" * depth,
                                                                b"]" * depth),
                 st.sampled_from(KINDS), st.sampled_from([10, 500, 990, 1000, 3000, 100_000]))
messages = batches | st.tuples(dumped | deep, st.lists(st.binary(max_size=40), max_size=4)).map(
    lambda hf: [hf[0], *hf[1]])
channels = st.sampled_from(["pool", "pool", "client", "command"])
identities = st.sampled_from([b"p0", b"p1", b"front", b"stranger"])


class Scripted:
    """Feeds a fixed list of cases to a fresh target (the shape :func:`run` expects)."""

    def __init__(self, target: Any, cases: list[Case]) -> None:
        self.target, self.cases = target, iter(cases)
        self.name = type(target).__name__.removesuffix("Target").lower()

    def case(self) -> Case:
        return next(self.cases)

    def feed(self, case: Case, report: Report) -> None:
        self.target.feed(case, report)


def deliver(target: Any, cases: list[Case], allowed: tuple[str, ...] = ()) -> None:
    report = run(Scripted(target, cases), len(cases), Report(), allowed)
    unknown = report.unknown
    assert not unknown, "\n\n".join(map(str, unknown))


@SETTINGS
@given(st.lists(st.tuples(channels, identities, messages), min_size=1, max_size=6))
def test_interchange_takes_any_header(script: list[tuple[str, bytes, list[bytes]]]) -> None:
    cases = [Case(ch, ident if ch != "client" or ident != b"stranger" else b"front", frames,
                  "hypothesis") for ch, ident, frames in script]
    deliver(InterchangeTarget(0, reset_every=10**9), cases)


@SETTINGS
@given(st.lists(messages, min_size=1, max_size=4))
def test_pool_takes_any_header(script: list[list[bytes]]) -> None:
    pytest.importorskip("mpi4py")
    deliver(PoolTarget(0), [Case("to_pool", b"", frames, "hypothesis") for frames in script])


@SETTINGS
@given(st.lists(messages, min_size=1, max_size=4))
def test_client_takes_any_header(script: list[list[bytes]]) -> None:
    deliver(ClientTarget(0), [Case("to_front", b"", f, "hypothesis") for f in script],
            CLIENT_ERRORS)


#: what pool p0 of a fresh target holds: result batches for these get past the first checks
P0_TASKS = sorted(next(p for p in InterchangeTarget(0).ix.pools if p.pool_id == "p0").in_flight)


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(P0_TASKS), st.integers(-1, 2), st.integers(-1, 4),
                          st.integers(-8, 16), st.integers(-1, 3)), min_size=1, max_size=4),
       st.integers(-1, 1), tails, buffers)
def test_result_batches_of_tasks_in_flight(rows: list[tuple[int, ...]], count: int, tail: bytes,
                                           extra: list[bytes]) -> None:
    """A pool's result batch for its own tasks: forwarded only if the front-end can read it."""
    deliver(InterchangeTarget(0, reset_every=10**9),
            [Case("pool", b"p0", batch({"k": "results"}, rows, count, tail, extra),
                  "hypothesis")])
