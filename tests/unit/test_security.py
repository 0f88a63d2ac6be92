"""rankpool.security without a running interchange: when to encrypt, key files, the gatekeeper's
decisions on hand-made ZAP requests and socket events."""

from __future__ import annotations

import logging
import os
import stat
import struct
from pathlib import Path
from typing import Any

import pytest
import zmq
from zmq.utils import z85

from rankpool import security
from rankpool.errors import (
    EncryptionUnavailable,
    KeyFileError,
    ProtocolError,
    RankPoolError,
)
from rankpool.interchange.config import InterchangeConfig
from rankpool.security import (
    CurveKeys,
    Gatekeeper,
    choose_encryption,
    client_curve,
    is_loopback,
    load_public,
    load_secret,
    make_keys,
)

needs_curve = pytest.mark.skipif(not zmq.has("curve"), reason="pyzmq built without CurveZMQ")


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- when to encrypt ------------------------------------------------------------------------------
@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1", True), ("127.1.2.3", True), ("localhost", True), ("LOCALHOST", True),
    ("::1", True), ("[::1]", True), ("::ffff:127.0.0.1", True),
    ("*", False), ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("128.0.0.1", False),
    ("login1.example.org", False), ("localhost.example.org", False),
])
def test_is_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


@needs_curve
def test_encryption_is_on_by_default_loopback_included(caplog: pytest.LogCaptureFixture) -> None:
    """Other users of a login node reach 127.0.0.1 too: loopback is no trust boundary."""
    assert choose_encryption(None, "127.0.0.1") is True
    assert choose_encryption(None, "::1") is True
    assert choose_encryption(None, "*") is True
    assert choose_encryption(None, "10.0.0.5") is True
    assert choose_encryption(True, "127.0.0.1") is True
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    with caplog.at_level(logging.WARNING, logger="rankpool.security"):
        assert choose_encryption(False, "10.0.0.5") is False
        assert choose_encryption(False, "127.0.0.1") is False  # an opt-out warns on loopback too
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 2 and all("encrypted=False" in w and "register a pool" in w
                                     and "stop the run" in w for w in warning)
    assert "10.0.0.5" in warning[0] and "network" in warning[0]
    assert "other user of this machine" in warning[1]
    with pytest.raises(TypeError, match="encrypted"):
        choose_encryption("yes", "127.0.0.1")  # type: ignore[arg-type]


def test_without_curve_encryption_fails_clearly(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.setattr(security, "curve_available", lambda: False)
    with pytest.raises(EncryptionUnavailable, match="without CurveZMQ.*encrypted=False"):
        choose_encryption(True, "127.0.0.1")
    for address in ("*", "127.0.0.1"):  # fails closed rather than sending tasks in the clear
        with pytest.raises(EncryptionUnavailable, match="on by default"):
            choose_encryption(None, address)
    assert choose_encryption(False, "127.0.0.1") is False
    with pytest.raises(EncryptionUnavailable):
        make_keys(str(tmp_path))
    assert issubclass(EncryptionUnavailable, RankPoolError)


def test_interchange_config_checks_curve_dir(tmp_path: Path) -> None:
    cfg = InterchangeConfig(curve_dir=str(tmp_path / "curve"))
    assert InterchangeConfig.from_json(cfg.to_json()) == cfg
    for bad in ("relative/curve", 3, "/a\0b"):
        with pytest.raises(ValueError, match="curve_dir"):
            InterchangeConfig(curve_dir=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="heartbeat_period"):  # not OverflowError (fuzz finding)
        InterchangeConfig.from_json('{"heartbeat_period": 1%s}' % ("0" * 400))


# -- key files -------------------------------------------------------------------------------------
@needs_curve
def test_keys_are_made_per_run_owner_only(tmp_path: Path) -> None:
    old = os.umask(0)  # a careless umask must not widen the files
    try:
        keys = make_keys(str(tmp_path))
    finally:
        os.umask(old)
    assert keys.directory == str(tmp_path / "curve")
    assert mode(keys.directory) == 0o700
    assert sorted(os.listdir(keys.directory)) == sorted(os.path.basename(f) for f in keys.files())
    for path in keys.files():
        assert mode(path) == 0o600, path
    for who in ("server", "pool", "front"):
        public, secret = load_secret(keys.secret(who))
        assert load_public(keys.public(who)) == public == zmq.curve_public(secret)
        assert zmq.auth.load_certificate(keys.public(who)) == (public, None)  # pyzmq's format
    first = load_public(keys.server_public)
    again = make_keys(str(tmp_path))  # a new run in the same directory: new keys, same modes
    assert load_public(again.server_public) != first
    assert all(mode(p) == 0o600 for p in again.files())
    assert not [n for n in os.listdir(keys.directory) if n.endswith(".tmp")]


@needs_curve
def test_an_existing_key_directory_is_tightened_or_refused(tmp_path: Path) -> None:
    (tmp_path / "curve").mkdir(mode=0o755)
    keys = make_keys(str(tmp_path))
    assert mode(keys.directory) == 0o700
    other = tmp_path / "other"
    (other / "real").mkdir(parents=True)
    (other / "curve").symlink_to(other / "real")
    with pytest.raises(KeyFileError, match="symbolic link"):
        make_keys(str(other))


@needs_curve
def test_bad_key_files_are_refused_by_name(tmp_path: Path) -> None:
    keys = make_keys(str(tmp_path))
    secret = keys.secret("pool")
    os.chmod(secret, 0o640)
    with pytest.raises(KeyFileError, match="pool.key_secret.*0640.*chmod 600"):
        load_secret(secret)
    os.chmod(secret, 0o600)
    load_secret(secret)
    with pytest.raises(KeyFileError, match="missing.key"):
        load_public(str(tmp_path / "missing.key"))
    with pytest.raises(KeyFileError, match="missing.key_secret"):
        load_secret(str(tmp_path / "missing.key_secret"))
    garbage = tmp_path / "garbage.key"
    garbage.write_text("public-key = \"short\"\n")
    with pytest.raises(KeyFileError, match="garbage.key.*40 Z85"):
        load_public(str(garbage))
    os.chmod(keys.public("pool"), 0o600)
    with pytest.raises(KeyFileError, match="no valid secret key"):  # a public file has none
        load_secret(keys.public("pool"))
    # a secret file whose public key is another one's
    mixed = tmp_path / "mixed.key_secret"
    pub, _ = load_secret(keys.secret("front"))
    _, sec = load_secret(keys.secret("pool"))
    mixed.write_text(f'curve\n    public-key = "{pub.decode()}"\n'
                     f'    secret-key = "{sec.decode()}"\n')
    mixed.chmod(0o600)
    with pytest.raises(KeyFileError, match="does not belong"):
        load_secret(str(mixed))


@needs_curve
def test_client_curve_reads_the_pool_keys_beside_the_server_key(tmp_path: Path) -> None:
    keys = make_keys(str(tmp_path))
    ctx = zmq.Context()
    try:
        pool = ctx.socket(zmq.DEALER)
        client_curve(pool, keys.server_public)  # libzmq does not read keys back: see the
        assert pool.getsockopt(zmq.MECHANISM) == zmq.CURVE  # integration tests for which
        assert not pool.getsockopt(zmq.CURVE_SERVER)  # key gets in where
        front = ctx.socket(zmq.DEALER)
        client_curve(front, keys.server_public, keys.secret("front"))
        assert front.getsockopt(zmq.MECHANISM) == zmq.CURVE
        os.remove(keys.secret("pool"))
        with pytest.raises(KeyFileError, match="pool.key_secret"):
            client_curve(ctx.socket(zmq.DEALER), keys.server_public)
    finally:
        ctx.destroy(linger=0)


# -- the gatekeeper's decisions --------------------------------------------------------------------
class Recorder:
    """Stands in for the ZAP socket: keeps what would be sent."""

    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send_multipart(self, frames: list[bytes]) -> None:
        self.sent.append(frames)

    def close(self, linger: int = 0) -> None:
        pass


@pytest.fixture
def gate(tmp_path: Path) -> Any:
    if not zmq.has("curve"):
        pytest.skip("pyzmq built without CurveZMQ")
    keys = make_keys(str(tmp_path))
    ctx = zmq.Context()
    warnings: list[str] = []
    g = Gatekeeper(ctx, keys.directory, lambda: lambda msg, *args: warnings.append(msg % args))
    real, g.zap = g.zap, Recorder()
    g.keys, g.warnings = keys, warnings  # type: ignore[attr-defined]
    yield g
    real.close(linger=0)
    g.close()
    ctx.destroy(linger=0)


def zap_request(domain: bytes, key: bytes | None, mechanism: bytes = b"CURVE",
                address: bytes = b"10.1.2.3") -> list[zmq.Frame]:
    creds = [z85.decode(key)] if key else []
    parts = [b"route", b"", b"1.0", b"7", domain, address, b"", mechanism, *creds]
    return [zmq.Frame(p) for p in parts]


def test_zap_admits_each_key_on_its_own_ports_only(gate: Any) -> None:
    pool_key = load_public(gate.keys.public("pool"))
    front_key = load_public(gate.keys.public("front"))
    stranger, _ = zmq.curve_keypair()
    cases = [(b"rankpool-pool", pool_key, b"200"), (b"rankpool-client", front_key, b"200"),
             (b"rankpool-command", front_key, b"200"), (b"rankpool-pool", front_key, b"400"),
             (b"rankpool-command", pool_key, b"400"), (b"rankpool-pool", stranger, b"400"),
             (b"elsewhere", pool_key, b"400")]
    for domain, key, status in cases:
        gate.on_zap(zap_request(domain, key))
        reply = gate.zap.sent[-1]
        assert reply[:4] == [b"route", b"", b"1.0", b"7"] and reply[4] == status, (domain, status)
    gate.on_zap(zap_request(b"rankpool-pool", None, mechanism=b"NULL"))
    assert gate.zap.sent[-1][4] == b"400"
    assert gate.refused == 5 and len(gate.warnings) == 5
    assert all("10.1.2.3" in w for w in gate.warnings)
    assert "on the pool port: its CurveZMQ key" in gate.warnings[2]
    assert "mechanism 'NULL'" in gate.warnings[-1]
    with pytest.raises(ProtocolError):
        gate.on_zap([zmq.Frame(b"route"), zmq.Frame(b""), zmq.Frame(b"2.0")])


def test_failed_handshakes_are_logged_with_their_cause(gate: Any) -> None:
    def event(kind: int, value: int) -> list[zmq.Frame]:
        return [zmq.Frame(struct.pack("=Hi", kind, value)), zmq.Frame(b"tcp://0.0.0.0:5555")]

    gate.on_event("pool", event(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                                zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH))
    gate.on_event("pool", event(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                                zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC))
    gate.on_event("command", event(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 104))
    gate.on_event("pool", event(zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400))  # on_zap logged it
    assert len(gate.warnings) == 3
    assert "pool port (tcp://0.0.0.0:5555)" in gate.warnings[0] \
        and "does not use CurveZMQ" in gate.warnings[0]
    assert "wrong interchange public key" in gate.warnings[1]
    assert "command port" in gate.warnings[2] and "broke during the handshake" in gate.warnings[2]
    with pytest.raises(ProtocolError):
        gate.on_event("pool", [zmq.Frame(b"x")])


def test_a_gatekeeper_needs_the_run_keys(tmp_path: Path) -> None:
    if not zmq.has("curve"):
        pytest.skip("pyzmq built without CurveZMQ")
    ctx = zmq.Context()
    try:
        with pytest.raises(KeyFileError, match="server.key_secret"):
            Gatekeeper(ctx, str(tmp_path))
        assert CurveKeys.at(str(tmp_path)).server_public == str(tmp_path / "server.key")
    finally:
        ctx.destroy(linger=0)
