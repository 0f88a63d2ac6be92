"""Regression tests for the bugs the fuzzer found (all fixed).

Each test states the behaviour the protocol promises for one finding: a deeply nested header
(json's RecursionError), a huge integer walltime (OverflowError in the spec check), and result
batches the interchange's check passed but the front-end's decoder refused. A new finding is
added here as ``xfail(strict=True)`` with an entry in :data:`fuzz_checks.KNOWN` until fixed.
See docs/reliability.md for the write-up.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fuzz_checks import Report, captured, receivable
from fuzz_messages import Case
from fuzz_targets import ClientTarget, InterchangeTarget, PoolTarget

from rankpool.errors import ProtocolError
from rankpool.protocol.batches import decode_tasks
from rankpool.protocol.result_batches import decode_results
from rankpool.protocol.wire import decode_header, pack_ints

DEEP = b'{"k":"heartbeat","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
HUGE_WALLTIME = (b'{"k":"tasks","n":1,"f":[["00",0]],"s":[[1,null,null,false,0,1' + b"0" * 400
                 + b']]}')
HUGE_WALLTIME_BLOB = pack_ints([7, 0, 0, 0, 0])


def test_deeply_nested_header_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode_header(DEEP)


def test_the_pool_survives_a_deeply_nested_header() -> None:
    """The header is dropped with a warning; rank 0's loop goes on (it used to abort the job)."""
    pytest.importorskip("mpi4py")
    target = PoolTarget(0)
    target.sock.inbox.append([DEEP])
    with captured() as cap:
        target.pm.pool_receive(0)
    assert not cap.bad and cap.warnings == 1


def test_the_front_end_survives_a_deeply_nested_header() -> None:
    """The header is dropped with a warning; the client's receive goes on."""
    target = ClientTarget(0)
    target.sock.inbox.append([DEEP])
    with captured() as cap:
        target.client._receive()
    assert not cap.bad and cap.warnings == 1


def test_the_interchange_drops_a_deeply_nested_header_with_a_warning() -> None:
    target: Any = InterchangeTarget(0)
    with captured() as cap:
        target.deliver("pool", b"p0", [DEEP])
    assert not cap.bad and cap.warnings == 1


def test_huge_integer_walltime_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode_tasks(json.loads(HUGE_WALLTIME), [HUGE_WALLTIME_BLOB])


def test_the_pool_survives_a_huge_integer_walltime() -> None:
    pytest.importorskip("mpi4py")
    target = PoolTarget(0)
    target.sock.inbox.append([HUGE_WALLTIME, HUGE_WALLTIME_BLOB])
    with captured() as cap:
        target.pm.pool_receive(0)
    assert not cap.bad and cap.warnings == 1


@pytest.mark.parametrize("rows, blob", [
    ([[1, 0, 1, 8, 0], [2, 0, 1, -4, 0]], b"abcd"),     # lengths that only add up
    ([[1, 0, 5, 0, 0]], b""),                           # flags that mean nothing
    ([[1, 0, 1, 0, 0], [2, 0, 3, 0, 0]], b""),          # an outcome of 2 continues task 1
])
def test_only_result_batches_the_front_end_can_read_are_forwarded(rows: list[Any],
                                                                  blob: bytes) -> None:
    """Tasks 1 and 2 are in flight on pool p0, which sends a result batch check_results
    passes and decode_results refuses: the interchange marks the tasks done and forwards the
    batch, the front-end drops it, and the two futures never end (found with the JSON
    records of protocol version 1, whose check and decoder were separate code)."""
    target: Any = InterchangeTarget(0)
    pool = next(p for p in target.ix.pools if p.pool_id == "p0")
    assert {1, 2} <= set(pool.in_flight)
    header = json.dumps({"k": "results", "n": len(rows)}).encode()
    report = Report()
    target.feed(Case("pool", b"p0", [header, pack_ints([v for r in rows for v in r]) + blob],
                     "reproducer"), report)
    assert 1 not in target.ix.known  # the interchange considers task 1 finished...
    forwarded = [f for f in report.findings if f.kind.startswith("sent the front-end")]
    assert not forwarded, forwarded[0].detail  # ...so the front-end must be able to read it


def test_receivable_is_what_the_front_end_applies() -> None:
    ok = [json.dumps({"k": "results", "n": 1}).encode(), pack_ints([1, 0, 1, 2, 0]) + b"ab"]
    assert receivable(ok) == ""
    decode_results(json.loads(ok[0]), ok[1:])
    assert "outcome flags" in receivable([b'{"k":"results","n":1}', pack_ints([1, 0, 9, 0, 0])])
