"""Fuzz a live interchange over real sockets, in the clear and over CurveZMQ.

An interchange runs in a thread; a front-end, a real-looking pool, three rogue pools and a
command client (with the run's keys when encrypted, plus one keyless sender that must be
refused) send it mutated messages on all three ports. Afterwards the interchange must still
be running and routing: a new pool registers, every other block is held, and a fresh task
travels front-end → interchange → pool → front-end. No record may carry a traceback or be
an ERROR, save the known bugs (:data:`fuzz_checks.KNOWN`). Messages that would stop the
interchange on purpose (a front-end Stop, the stop command) are not sent.

2,000 messages per variant by default, 20,000 with ``RANKPOOL_SLOW=1``.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from fuzz_checks import captured, known_bug
from fuzz_messages import Mutator, as_bytes, corpus, register, result, task

from rankpool.interchange import Interchange, InterchangeConfig
from rankpool.protocol.batches import decode_tasks, encode_tasks
from rankpool.protocol.messages import Command, Heartbeat, decode_message
from rankpool.protocol.result_batches import encode_results, result_ids
from rankpool.protocol.wire import decode_header
from rankpool.security import CurveKeys, client_curve, make_keys

SLOW = os.environ.get("RANKPOOL_SLOW") == "1"
N = 20_000 if SLOW else 2_000
SEED = int(os.environ.get("RANKPOOL_FUZZ_SEED", "6"))

pytestmark = pytest.mark.timeout(600 if SLOW else 120)


def stops_the_interchange(channel: str, frames: list[bytes]) -> bool:
    """Whether a message would shut the interchange down by design."""
    try:
        header = decode_header(frames[0])
    except Exception:  # noqa: BLE001 - whatever the interchange makes of it, it is not a stop
        return False
    if channel == "client":
        return header.get("k") == "stop"
    return channel == "command" and header.get("name") == "stop"


class Live:
    """An interchange in a thread and DEALERs to talk to it."""

    def __init__(self, keys: CurveKeys | None) -> None:
        self.keys = keys
        cfg = InterchangeConfig(front_identity="front", heartbeat_period=0.5,
                                heartbeat_threshold=120.0,
                                curve_dir=keys.directory if keys else "")
        self.ix = Interchange(cfg)
        self.pool_port, self.client_port, self.command_port = self.ix.bind()
        self.thread = threading.Thread(target=self.ix.run, name="rankpool-interchange-fuzz",
                                       daemon=True)
        self.thread.start()
        self.ctx = zmq.Context()

    def dealer(self, port: int, identity: bytes | None = None, who: str | None = None) -> Any:
        sock = self.ctx.socket(zmq.DEALER)
        for opt, value in ((zmq.LINGER, 0), (zmq.SNDHWM, 0), (zmq.RCVHWM, 0)):
            sock.setsockopt(opt, value)
        if identity:
            sock.setsockopt(zmq.IDENTITY, identity)
        if self.keys is not None and who is not None:
            client_curve(sock, self.keys.server_public, self.keys.secret(who))
        sock.connect(f"tcp://127.0.0.1:{port}")
        return sock

    def close(self) -> None:
        self.ix.stop()
        self.thread.join(10)
        self.ctx.destroy(linger=0)


def expect(sock: Any, want: Any, timeout: float = 10.0) -> list[bytes]:
    """The first message for which ``want(header, frames)`` holds; others are skipped."""
    deadline = timeout * 1000
    while sock.poll(deadline):
        frames = sock.recv_multipart()
        try:
            header = decode_header(frames[0])
        except Exception:  # noqa: BLE001
            continue
        if want(header, frames):
            return frames
    raise AssertionError("the interchange did not answer")


def drain(*socks: Any) -> None:
    for sock in socks:
        while True:
            try:
                sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break


@pytest.fixture(params=[False, True], ids=["plain", "curve"])
def live(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Live]:
    if request.param and not zmq.has("curve"):
        pytest.skip("pyzmq built without CurveZMQ")
    lv = Live(make_keys(str(tmp_path)) if request.param else None)
    yield lv
    lv.close()


def test_live_interchange_survives_garbage_on_every_port(live: Live) -> None:
    rng = random.Random(SEED)
    mutator = Mutator(SEED)
    front = live.dealer(live.client_port, b"front", "front")
    front.send_multipart(Heartbeat().encode())
    p0 = live.dealer(live.pool_port, b"p0", "pool")
    p0.send_multipart(register("p0", "b0", (4,)))
    expect(p0, lambda h, f: h["k"] == "registered")
    front.send_multipart(as_bytes(encode_tasks([task(i) for i in range(1, 9)])))
    got = expect(p0, lambda h, f: h["k"] == "tasks")
    in_flight = [t.task_id for t in decode_tasks(decode_header(got[0]), got[1:])]
    rogues = [live.dealer(live.pool_port, b"r%d" % i, "pool") for i in range(3)]
    if live.keys is not None:  # one more that holds no key: nothing it sends may get in
        rogues.append(live.dealer(live.pool_port, b"nokey"))
    cmd = live.dealer(live.command_port, who="front")
    senders = {"pool": [p0, *rogues], "client": [front], "command": [cmd]}
    messages = corpus(in_flight)
    others = [f for msgs in messages.values() for f in msgs]

    sent = 0
    with captured() as cap:
        while sent < N:
            channel = rng.choices(("pool", "client", "command"), (45, 35, 20))[0]
            frames, _ = mutator.case(messages[channel], others)
            if stops_the_interchange(channel, frames):
                continue
            try:
                rng.choice(senders[channel]).send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:  # the keyless sender: refused, so it has no peer to queue for
                pass
            sent += 1
            if sent % 100 == 0:
                drain(front, p0, cmd, *rogues)

        # the blast's own commands are answered up to here; then a clean command client
        cmd.send_multipart(Command("outstanding", "fence").encode())
        expect(cmd, lambda h, f: h["k"] == "reply" and h.get("name") == "outstanding")
        assert live.thread.is_alive(), "the interchange stopped"
        cmd = live.dealer(live.command_port, who="front")

        # still routing: a new pool, the other blocks held, one task there and back
        final = live.dealer(live.pool_port, b"final", "pool")
        final.send_multipart(register("final", "bfinal", (2,)))
        reply = expect(final, lambda h, f: h["k"] == "registered")
        assert decode_message(decode_header(reply[0])).error == ""  # type: ignore[attr-defined]
        cmd.send_multipart(Command("pools", "").encode())
        pools = decode_message(decode_header(expect(
            cmd, lambda h, f: h["k"] == "reply" and h.get("name") == "pools")[0])).value  # type: ignore[attr-defined]
        for block in {p["block_id"] for p in pools} - {"bfinal"}:
            cmd.send_multipart(Command("hold", block).encode())
            expect(cmd, lambda h, f: h["k"] == "reply" and h.get("name") == "hold")
        front.send_multipart(as_bytes(encode_tasks([task(10**12)])))
        ids: list[int] = []
        while 10**12 not in ids:  # tasks the blast left queued come first: run them all
            got = expect(final, lambda h, f: h["k"] == "tasks")
            ids = [t.task_id for t in decode_tasks(decode_header(got[0]), got[1:])]
            final.send_multipart(as_bytes(encode_results([result(i) for i in ids])))
        expect(front, lambda h, f: h["k"] == "results" and 10**12 in result_ids(h, f[1:]))
        records = list(cap.bad)

    strict = os.environ.get("RANKPOOL_FUZZ_STRICT", "")
    bad = [r for r in records if not r.exc_info or not known_bug(r.exc_info[1])
           or strict == "1" or known_bug(r.exc_info[1]) in strict.split(",")]
    print(f"\n{sent} messages; {len(records) - len(bad)} known-bug records; "
          f"warnings {cap.warnings}")
    assert not bad, "\n".join(f"{r.levelname} {r.getMessage()}: {r.exc_info and r.exc_info[1]!r}"
                              for r in bad[:10])
