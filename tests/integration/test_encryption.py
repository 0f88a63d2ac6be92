"""CurveZMQ end to end: only this run's keys get in, on every port, and every refusal is logged.

An interchange in a thread faces raw ZeroMQ peers (no keys, a stranger's keys, the wrong
server key, the pools' key on the front-end's ports); then ``rankpool.Executor`` and the Parsl
``ExtremeScaleExecutor`` run 1- and 2-rank tasks over encrypted connections while intruders
knock on the pool port. Every wait is bounded.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from helpers import executor, wait_for

from rankpool._version import __version__
from rankpool.interchange import Interchange, InterchangeConfig
from rankpool.protocol.messages import (
    PROTOCOL_VERSION,
    PYTHON_VERSION,
    Command,
    Heartbeat,
    Register,
    Registered,
    decode_message,
)
from rankpool.protocol.wire import decode_header
from rankpool.security import (
    CurveKeys,
    client_curve,
    load_public,
    load_secret,
    make_keys,
)

pytestmark = [pytest.mark.skipif(not zmq.has("curve"), reason="pyzmq built without CurveZMQ"),
              pytest.mark.timeout(120)]

#: how long a refused peer is watched for a reply that must never come
SILENCE = 1.0


# -- task functions --------------------------------------------------------------------------------
def double(x: int) -> int:
    return 2 * x


def rank_and_size(comm: Any = None) -> tuple[int, int]:
    return comm.Get_rank(), comm.Get_size()


# -- raw peers -------------------------------------------------------------------------------------
def register(pool_id: str) -> list[bytes]:
    return Register(PROTOCOL_VERSION, __version__, PYTHON_VERSION, "intruder", pool_id, ["evil"],
                    [1], 1, 1).encode()


class Raw:
    """A bare DEALER: no keys, someone's keys, or the run's keys."""

    def __init__(self, ctx: zmq.Context, port: int, *, keys: tuple[bytes, bytes] | None = None,
                 server: bytes | None = None, identity: bytes | None = None) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if identity:
            self.sock.setsockopt(zmq.IDENTITY, identity)
        if keys is not None:
            self.sock.curve_publickey, self.sock.curve_secretkey = keys
            self.sock.curve_serverkey = server
        self.sock.connect(f"tcp://127.0.0.1:{port}")

    def ask(self, frames: list[bytes], within: float = 5.0) -> dict[str, Any] | None:
        """Send, and return the first non-heartbeat reply's header (None if none comes).

        A refused peer may have no connection left to queue on: then nothing is sent at all.
        """
        try:
            self.sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            return None
        while self.sock.poll(int(within * 1000)):
            header = decode_header(self.sock.recv_multipart()[0])
            if header["k"] != "heartbeat":
                return header
        return None


def stranger() -> tuple[bytes, bytes]:
    return zmq.curve_keypair()


# -- an interchange in a thread --------------------------------------------------------------------
class Running:
    def __init__(self, keys: CurveKeys) -> None:
        self.keys = keys
        self.ix = Interchange(InterchangeConfig(curve_dir=keys.directory, heartbeat_period=0.2,
                                                heartbeat_threshold=30.0))
        self.pool_port, self.client_port, self.command_port = self.ix.bind()
        self.thread = threading.Thread(target=self.ix.run, name="rankpool-interchange-test",
                                       daemon=True)
        self.thread.start()
        self.ctx = zmq.Context()
        self.server = load_public(keys.server_public)

    def raw(self, port: int, who: str | None = None, **kwargs: Any) -> Raw:
        keys = load_secret(self.keys.secret(who)) if who else kwargs.pop("keys", None)
        return Raw(self.ctx, port, keys=keys, server=kwargs.pop("server", self.server), **kwargs)

    def close(self) -> None:
        self.ix.stop()
        self.thread.join(5)
        assert not self.thread.is_alive()
        self.ctx.destroy(linger=0)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    r = Running(make_keys(str(tmp_path)))
    yield r
    r.close()


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> Callable[[], str]:
    caplog.set_level(logging.WARNING, logger="rankpool")
    return lambda: "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def test_only_the_runs_keys_get_in_on_each_port(running: Running,
                                                warnings: Callable[[], str]) -> None:
    r = running
    # the pools' key on the pool port: a pool registers
    pool = r.raw(r.pool_port, "pool", identity=b"p1")
    reply = pool.ask(register("p1"))
    assert reply is not None and isinstance(decode_message(reply), Registered)
    assert decode_message(reply).error == ""  # type: ignore[attr-defined]
    # the front-end's key on the command port: commands are answered
    cmd = r.raw(r.command_port, "front")
    reply = cmd.ask(Command("pools", "").encode())
    assert reply is not None and [p["pool_id"] for p in decode_message(reply).value] == ["p1"]  # type: ignore[attr-defined]

    # everyone else gets nothing, whatever port and whatever key
    intruders = {
        "no keys on the pool port": Raw(r.ctx, r.pool_port, identity=b"x1"),
        "a stranger's keys on the pool port": r.raw(r.pool_port, keys=stranger(), identity=b"x2"),
        "the wrong server key": r.raw(r.pool_port, keys=stranger(), server=stranger()[0],
                                      identity=b"x3"),
        "the pools' key on the command port": r.raw(r.command_port, "pool"),
        "no keys on the command port": Raw(r.ctx, r.command_port),
        "no keys on the client port": Raw(r.ctx, r.client_port),
        "the pools' key on the client port": r.raw(r.client_port, "pool"),
    }
    for what, peer in intruders.items():
        frames = Command("stop", "").encode() if "command" in what else \
            Heartbeat().encode() if "client" in what else register("x")
        assert peer.ask(frames, within=SILENCE) is None, what
    assert r.thread.is_alive() and [p.pool_id for p in r.ix.pools] == ["p1"]
    assert r.ix.front is not None and r.ix.front.identity is None  # no front-end got in

    # a keyless peer is refused for the mechanism, or (when it notices first) hangs up
    keyless = re.compile(r"on the (pool|command|front-end) port \(tcp://127\.0\.0\.1:\d+\): "
                         r"(the peer does not use CurveZMQ|the connection broke during)")
    expected = ["refused a connection from 127.0.0.1 on the pool port: its CurveZMQ key",
                "wrong interchange public key", "from 127.0.0.1 on the command port",
                "not this run's front key", "from 127.0.0.1 on the front-end port"]
    wait_for(lambda: all(e in warnings() for e in expected)
             and {m.group(1) for m in keyless.finditer(warnings())} == {"pool", "command",
                                                                      "front-end"})
    # the one who got in still works
    reply = cmd.ask(Command("outstanding", "").encode())
    assert reply is not None and decode_message(reply).value == 0  # type: ignore[attr-defined]


def test_the_pool_key_file_is_what_a_pool_uses(running: Running) -> None:
    """client_curve() as a pool calls it: --server-key FILE, and pool.key_secret beside it."""
    r = running
    sock = r.ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, b"p2")
    client_curve(sock, r.keys.server_public)
    sock.connect(f"tcp://127.0.0.1:{r.pool_port}")
    sock.send_multipart(register("p2"))
    assert sock.poll(5000)
    assert decode_header(sock.recv_multipart()[0])["k"] == "registered"


# -- the executors ---------------------------------------------------------------------------------
def test_executor_encrypted_runs_tasks_and_refuses_intruders(tmp_path: Path) -> None:
    with executor(tmp_path, max_ranks=2, encrypted=True) as ex:
        assert ex.encrypted
        assert [ex.submit(double, i).result(timeout=60) for i in range(4)] == [0, 2, 4, 6]
        assert ex.requirements(num_ranks=2, results="all").submit(rank_and_size).result(
            timeout=60) == [(0, 2), (1, 2)]

        keys = CurveKeys.at(str(tmp_path / "curve"))
        assert stat.S_IMODE(os.stat(keys.directory).st_mode) == 0o700
        for path in keys.files():
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
        info = json.loads((tmp_path / "interchange.json").read_text())
        assert info["server_key"] == keys.server_public == ex.pool_config.server_key
        assert "--server-key" in ex.pool_config.to_argv()

        port = ex.client.ports["pool_port"]
        ctx = zmq.Context()
        try:
            server = load_public(keys.server_public)
            for peer in (Raw(ctx, port, identity=b"nokeys"),
                         Raw(ctx, port, keys=stranger(), server=server, identity=b"wrongkeys")):
                assert peer.ask(register("intruder"), within=SILENCE) is None
        finally:
            ctx.destroy(linger=0)
        assert [p["block_id"] for p in ex.pools()] == ["0"]

        log_file = tmp_path / "interchange.log"
        expected = ["CurveZMQ, keys in", "refused a connection from 127.0.0.1 on the pool port"]
        keyless = re.compile(r"WARNING .*refused a connection on the pool port .*(does not use "
                             r"CurveZMQ|broke during the handshake)")
        wait_for(lambda: all(e in log_file.read_text() for e in expected)
                 and keyless.search(log_file.read_text()))
        # and the executor goes on serving
        assert ex.requirements(num_ranks=2).submit(rank_and_size).result(timeout=60) == (0, 2)
        assert ex.submit(double, 21).result(timeout=60) == 42


def test_extreme_scale_executor_encrypted_under_a_dataflow_kernel(tmp_path: Path) -> None:
    import parsl
    from parsl import python_app
    from parsl.logconfigs.file import FileLogging

    from rankpool import ExtremeScaleExecutor
    from rankpool.frontends.parsl.executor import local_provider

    ranks = python_app(rank_and_size)
    xs = ExtremeScaleExecutor(label="xs", encrypted=True, ranks_per_node=2,
                              heartbeat_period=0.5, heartbeat_threshold=3.0,
                              provider=local_provider(init_blocks=1, min_blocks=0, max_blocks=1))
    dfk = parsl.load(parsl.Config(executors=[xs], run_dir=str(tmp_path / "runinfo"),
                                  strategy_period=0.5,
                                  initialize_logging=FileLogging(level=logging.INFO)))
    try:
        got = ranks(parsl_resource_specification={"num_ranks": 2, "results": "all"})
        assert got.result(timeout=60) == [(0, 2), (1, 2)]
        assert ranks().result(timeout=60) == (0, 1)
        log_dir = Path(xs.log_dir)
        keys = CurveKeys.at(str(log_dir / "curve"))
        assert all(stat.S_IMODE(os.stat(p).st_mode) == 0o600 for p in keys.files())
        assert "CurveZMQ, keys in" in (log_dir / "interchange.log").read_text()
        assert f"--server-key {keys.server_public}" in (log_dir / "pool_command.sh").read_text()
    finally:
        dfk.cleanup()
        parsl.clear()
