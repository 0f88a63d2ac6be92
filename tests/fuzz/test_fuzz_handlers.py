"""Fuzz the message handlers in-process: the interchange's, the pool manager's, the front-end's.

Mutated valid messages (bits flipped, frames truncated, dropped, added, spliced, JSON values
and types changed, headers nested deep) and plain noise go through each handler on fake
sockets (see :mod:`fuzz_checks` for what counts as a failure). The default suite runs 5,000
cases per target from a fixed seed; ``RANKPOOL_SLOW=1`` runs 100,000 per target
(``RANKPOOL_FUZZ_SEED`` picks another seed). Bugs already reported in code this suite does
not own (:data:`fuzz_checks.KNOWN`) are counted, not failed, unless ``RANKPOOL_FUZZ_STRICT=1``;
``test_fuzz_findings.py`` holds their reproducers. ``RANKPOOL_FUZZ_REPORT=FILE`` appends each
run's figures to FILE as JSON lines.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from fuzz_checks import Report, run
from fuzz_targets import CLIENT_ERRORS, ClientTarget, InterchangeTarget, PoolTarget

SLOW = os.environ.get("RANKPOOL_SLOW") == "1"
SEED = int(os.environ.get("RANKPOOL_FUZZ_SEED", "6"))
TARGETS = {"interchange": (InterchangeTarget, ()), "pool": (PoolTarget, ()),
           "client": (ClientTarget, CLIENT_ERRORS)}


def fuzz(name: str, n: int, seed: int) -> Report:
    make, allowed = TARGETS[name]
    report = run(make(seed), n, Report(), allowed)
    print(f"\n{name}, seed {seed}:\n{report.summary()}")
    path = os.environ.get("RANKPOOL_FUZZ_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"target": name, "seed": seed, "cases": sum(report.cases.values()),
                                 "seconds": round(report.seconds, 2), "by_channel": report.cases,
                                 "outcomes": report.outcomes, "findings": report.counts}) + "\n")
    return report


def check(report: Report) -> None:
    assert sum(report.cases.values()) > 0
    unknown = report.unknown
    assert not unknown, f"{len(unknown)} findings:\n\n" + "\n\n".join(map(str, unknown))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_handlers(name: str) -> None:
    report = fuzz(name, 5_000, SEED)
    assert sum(report.cases.values()) == 5_000
    check(report)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not SLOW, reason="long fuzz: set RANKPOOL_SLOW=1")
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_handlers_100k(name: str) -> None:
    report = fuzz(name, 100_000, SEED + 1000)
    assert sum(report.cases.values()) == 100_000
    check(report)


def test_results_of_one_drain_reach_the_front_end_as_one_message() -> None:
    """Result batches taken in one drain of the pool socket are forwarded joined: rows, data
    and out-of-band frames of both pools' batches, in order."""
    from fuzz_messages import as_bytes, result

    from rankpool.protocol.result_batches import decode_results, encode_results
    from rankpool.protocol.wire import decode_header

    target: Any = InterchangeTarget(0)
    pools = {p.pool_id: sorted(p.in_flight) for p in target.ix.pools}
    sent = [[result(pools["p0"][0]), result(pools["p0"][1], full=True, buffers=2)],
            [result(pools["p1"][0], full=True, buffers=1), result(pools["p1"][1])]]
    for identity, batch in zip((b"p0", b"p1"), sent):
        target.pool_sock.inbox.append([identity, *as_bytes(encode_results(batch))])
    target.ix._drain("pool", target.pool_sock, target.ix.on_pool_message)
    (out,) = target.client_sock.sent

    def view(results: list[Any]) -> list[Any]:
        return [(r.task_id, [(o.rank, o.ok, bytes(o.data), [bytes(b) for b in o.buffers])
                             for o in r.outcomes]) for r in results]

    assert out[0] == b"front"
    assert view(decode_results(decode_header(out[1]), out[2:])) == view(sent[0] + sent[1])
    assert not {pools["p0"][0], pools["p1"][1]} & target.ix.known


def test_the_interchange_target_is_live() -> None:
    """The target really routes: its tasks are in flight, a valid result reaches the front-end."""
    from fuzz_messages import as_bytes, result

    from rankpool.protocol.result_batches import encode_results, result_ids
    from rankpool.protocol.wire import decode_header

    target: Any = InterchangeTarget(0)
    pools = {p.pool_id: p for p in target.ix.pools}
    assert set(pools) == {"p0", "p1"} and len(target.ix.known) == 20
    task_id = next(iter(pools["p0"].in_flight))
    target.deliver("pool", b"p0", as_bytes(encode_results([result(task_id)])))
    (out,) = target.client_sock.sent
    assert out[0] == b"front" and result_ids(decode_header(out[1]), out[2:]) == [task_id]
    assert task_id not in target.ix.known
