"""Fuzz the authentication handshake: the interchange's ZAP handler, and raw ZMTP/CurveZMQ
greetings and HELLO commands sent over TCP to a live interchange's ports.

* The ZAP handler (:meth:`rankpool.security.Gatekeeper.on_zap`) gets mutated ZAP requests
  built from valid ones (each run key on each port, strangers' keys, other mechanisms). It
  must answer every well-formed request, admit exactly the run's pool key on the pool port and
  the front-end's key on the front-end and command ports, and refuse anything else with a
  ``ProtocolError`` or a 400, never another exception.
* Raw TCP peers send mutated greetings and HELLO commands (ZMTP 3.0, mechanism CURVE or not)
  to all three ports. Afterwards the interchange still runs, no stranger got in, and a pool
  with the run's keys registers.

2,000 ZAP requests and 300 connections by default; ten times as many with ``RANKPOOL_SLOW=1``.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import threading
from pathlib import Path
from typing import Any

import pytest
import zmq
from fuzz_messages import register

from rankpool.errors import ProtocolError
from rankpool.interchange import Interchange, InterchangeConfig
from rankpool.protocol.wire import decode_header
from rankpool.security import DOMAINS, Gatekeeper, client_curve, load_public, make_keys

SLOW = os.environ.get("RANKPOOL_SLOW") == "1"
SEED = int(os.environ.get("RANKPOOL_FUZZ_SEED", "6"))

pytestmark = [pytest.mark.skipif(not zmq.has("curve"), reason="pyzmq built without CurveZMQ"),
              pytest.mark.timeout(600 if SLOW else 120)]


class Replies:
    """Stands in for the ZAP handler's socket: keeps what it would send."""

    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send_multipart(self, frames: list[bytes], *args: Any, **kwargs: Any) -> None:
        self.sent.append(frames)

    def close(self, linger: int | None = None) -> None:
        pass


def zap_request(domain: bytes, mechanism: bytes, credentials: list[bytes]) -> list[bytes]:
    return [b"route", b"", b"1.0", b"7", domain, b"127.0.0.1", b"", mechanism, *credentials]


def mutate(rng: random.Random, frames: list[bytes]) -> list[bytes]:
    frames = list(frames)
    for _ in range(rng.randint(1, 3)):
        if not frames:
            frames = [b""]
        how = rng.randrange(6)
        i = rng.randrange(len(frames))
        if how == 0:
            frames[i] = bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 31, 32, 33))))
        elif how == 1 and frames[i]:  # flip one bit
            b = bytearray(frames[i])
            j = rng.randrange(len(b))
            b[j] ^= 1 << rng.randrange(8)
            frames[i] = bytes(b)
        elif how == 2:
            del frames[i]
        elif how == 3:
            frames.insert(i, rng.choice((b"", b"CURVE", b"NULL", b"1.0", b"\0" * 32)))
        elif how == 4:
            frames = frames[:i]
        else:
            frames[i] = rng.choice(list(DOMAINS.values()) + [b"", b"PLAIN", b"CURVE"])
    return frames


def admitted(gate: Gatekeeper, frames: list[bytes]) -> bool:
    """The oracle: whether a request should get a 200."""
    if len(frames) < 9 or frames[1] != b"" or frames[2] != b"1.0" or frames[7] != b"CURVE":
        return False
    if len(frames[8]) != 32:
        return False
    wanted = {DOMAINS["pool"]: "pool", DOMAINS["front-end"]: "front",
              DOMAINS["command"]: "front"}.get(frames[4])
    return wanted is not None and zmq.utils.z85.encode(frames[8]) == gate.allowed[wanted]


def test_zap_handler_admits_only_the_runs_keys_on_their_ports(tmp_path: Path) -> None:
    keys = make_keys(str(tmp_path))
    ctx = zmq.Context()
    gate = Gatekeeper(ctx, keys.directory)
    gate.zap.close(linger=0)
    replies = Replies()
    gate.zap = replies  # type: ignore[assignment]
    pool, front = (zmq.utils.z85.decode(load_public(keys.public(w))) for w in ("pool", "front"))
    stranger = zmq.utils.z85.decode(zmq.curve_keypair()[0])
    corpus = [zap_request(d, b"CURVE", [k]) for d in DOMAINS.values()
              for k in (pool, front, stranger)]
    corpus += [zap_request(DOMAINS["pool"], b"NULL", []),
               zap_request(DOMAINS["pool"], b"PLAIN", [b"user", b"password"])]
    rng = random.Random(SEED)
    n = 20_000 if SLOW else 2_000
    let_in = 0
    try:
        for i in range(n):
            frames = corpus[i] if i < len(corpus) else mutate(rng, rng.choice(corpus))
            before = len(replies.sent)
            try:
                gate.on_zap([zmq.Frame(f) for f in frames])
            except ProtocolError:
                assert len(frames) < 8 or frames[1] != b"" or frames[2] != b"1.0", frames
                continue
            assert len(replies.sent) == before + 1, frames
            status = replies.sent[-1][4]
            assert status == (b"200" if admitted(gate, frames) else b"400"), frames
            let_in += status == b"200"
    finally:
        gate.close()
        ctx.term()
    assert let_in >= 3  # the valid corpus got in: the oracle is not vacuous


# -- raw handshakes over TCP ----------------------------------------------------------------------
def greeting(rng: random.Random) -> bytes:
    """A ZMTP 3.0 greeting, usually asking for CURVE as a client."""
    mechanism = rng.choice((b"CURVE", b"CURVE", b"NULL", b"PLAIN", b"")).ljust(20, b"\0")
    return b"\xff" + b"\0" * 8 + b"\x7f" + bytes([3, rng.choice((0, 1))]) + mechanism + b"\0" * 32


def hello(rng: random.Random) -> bytes:
    """A CurveZMQ HELLO command with random keys and box: a stranger's, or noise."""
    body = b"\x05HELLO" + b"\x01\x00" + b"\0" * 72 + os.urandom(32) + struct.pack(">Q", 1) \
        + os.urandom(80)
    return b"\x04" + bytes([len(body)]) + body


def mangle(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(0, 4)):
        if not b:
            break
        b[rng.randrange(len(b))] = rng.randrange(256)
    if rng.random() < 0.2:
        b = b[:rng.randrange(len(b) + 1)]
    if rng.random() < 0.1:
        b += os.urandom(rng.randrange(1, 4096))
    return bytes(b)


def test_live_interchange_survives_garbage_handshakes(tmp_path: Path) -> None:
    keys = make_keys(str(tmp_path))
    ix = Interchange(InterchangeConfig(curve_dir=keys.directory, heartbeat_period=0.5,
                                       heartbeat_threshold=120.0))
    ports = ix.bind()
    thread = threading.Thread(target=ix.run, name="rankpool-interchange-fuzz", daemon=True)
    thread.start()
    rng = random.Random(SEED)
    ctx = zmq.Context()
    try:
        for _ in range(3000 if SLOW else 300):
            with socket.create_connection(("127.0.0.1", rng.choice(ports)), timeout=2) as s:
                try:
                    s.sendall(mangle(rng, greeting(rng)) + mangle(rng, hello(rng)))
                    s.settimeout(0.05)
                    s.recv(4096)
                except OSError:
                    pass  # closed on us, or silent: both fine
        assert thread.is_alive(), "the interchange stopped"
        assert ix._gate is not None and ix._gate.refused > 0
        assert len(ix.pools) == 0  # nothing got in
        pool = ctx.socket(zmq.DEALER)
        pool.setsockopt(zmq.LINGER, 0)
        client_curve(pool, keys.server_public)
        pool.connect(f"tcp://127.0.0.1:{ports[0]}")
        pool.send_multipart(register("after", "b1", (2,)))
        assert pool.poll(10_000), "a pool with the run's keys got no answer"
        assert decode_header(pool.recv_multipart()[0])["k"] == "registered"
    finally:
        ix.stop()
        thread.join(10)
        ctx.destroy(linger=0)
