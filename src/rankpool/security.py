"""CurveZMQ for the interchange's sockets: per-run keys, who may connect, and who was refused.

::

    front-end ── make_keys(run_dir) ──▶ <run_dir>/curve/  (0700; every file 0600)
                                          server.key  server.key_secret   the interchange
                                          pool.key    pool.key_secret     every pool (shared)
                                          front.key   front.key_secret    the front-end
    interchange ── Gatekeeper: CURVE server on its three ports; a ZAP handler in its poll loop
                   lets in pool.key on the pool port and front.key on the client and command
                   ports, and logs every refusal (with the peer's address where ZeroMQ gives it)
    pool rank 0 ── client_curve(sock, --server-key FILE): reads pool.key_secret beside FILE

Keys are made for each run, so a key leaked from an old run opens nothing. Pools read their
key pair from the run directory: a pool on another node needs that directory on a shared
file system (as its log does), or a copy at the same path. Encryption and authentication
are on by default, loopback included: other users of a login node reach 127.0.0.1 too
(:func:`choose_encryption`). Every socket also caps the size of a message part it takes
(:func:`limit_messages`).

A key file uses pyzmq's certificate format (``zmq.auth.load_certificate`` reads it). A
secret key file that its group or others may read is refused, as ``ssh`` refuses one.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import zmq
import zmq.auth
from zmq.utils import z85

from ._version import __version__
from .errors import EncryptionUnavailable, KeyFileError, ProtocolError, RunDirError
from .private_files import private_dir, write_private

log = logging.getLogger(__name__)

#: the run directory's subdirectory that holds the keys
CURVE_DIR = "curve"
#: where libzmq sends its authentication (ZAP) requests; one handler per context
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
#: the ZAP domain of each interchange socket, and whose key it accepts
DOMAINS = {"pool": b"rankpool-pool", "front-end": b"rankpool-client",
           "command": b"rankpool-command"}
_KEY_OF_DOMAIN = {b"rankpool-pool": "pool", b"rankpool-client": "front",
                  b"rankpool-command": "front"}
#: the socket events a Gatekeeper logs: failed handshakes, and closed connections (a peer
#: that sends a message part over the socket's MAXMSGSIZE is cut off, which shows only so)
HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_DISCONNECTED)

_WHY_PROTOCOL = {
    zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        "the peer does not use CurveZMQ (a client without this run's keys)",
    zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
        "the peer's handshake does not decrypt (it has the wrong interchange public key)",
}


# -- when to encrypt ------------------------------------------------------------------------------
def curve_available() -> bool:
    """Whether this pyzmq's libzmq was built with CurveZMQ (libsodium or tweetnacl)."""
    return bool(zmq.has("curve"))


def require_curve(why: str = "encrypted=True") -> None:
    """Raise :class:`EncryptionUnavailable`, saying what to do, when CurveZMQ is missing."""
    if not curve_available():
        raise EncryptionUnavailable(
            f"{why}: this pyzmq (libzmq {zmq.zmq_version()}) was built without CurveZMQ, so "
            "connections cannot be encrypted; install a pyzmq wheel from PyPI (it bundles "
            "libsodium) or build libzmq with libsodium, or pass encrypted=False on a trusted "
            "network")


def is_loopback(address: str) -> bool:
    """Whether pools would reach ``address`` over loopback only: 127.0.0.0/8, ::1, localhost.

    Anything else, ``*`` and host names included, counts as the network.
    """
    host = address.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def choose_encryption(encrypted: bool | None, address: str) -> bool:
    """Decide whether the interchange authenticates and encrypts: yes unless ``encrypted`` is
    False (``None``, the default, means yes, loopback included).

    Refuses a non-boolean; raises :class:`EncryptionUnavailable` when CurveZMQ is missing
    (rather than silently sending tasks in the clear), and warns, naming the risk, when it
    is turned off.
    """
    if encrypted is not None and not isinstance(encrypted, bool):
        raise TypeError(f"encrypted must be True, False or None (the default: on), got "
                        f"{encrypted!r}")
    if encrypted is False:
        log.warning(
            "encrypted=False: the interchange's ports (pools on %r, the front-end and commands "
            "on 127.0.0.1) accept anyone who reaches them, %s, without authentication or "
            "encryption: they can register a pool and run or read your tasks, answer with "
            "results that run code in this process when unpickled, and hold or stop the run. "
            "Leave encrypted unset unless every user of %s is trusted", address,
            "including every other user of this machine" if is_loopback(address)
            else "from this machine or the network",
            "this machine" if is_loopback(address) else "this machine and the network")
        return False
    require_curve("encrypted=True" if encrypted else "encryption is on by default (encrypted=None)")
    return True


# -- key files ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CurveKeys:
    """The key files of one run, all under ``directory``."""

    directory: str

    @classmethod
    def at(cls, curve_dir: str) -> CurveKeys:
        return cls(os.path.abspath(curve_dir))

    def public(self, who: str) -> str:
        """The public key file of ``who`` (``server``, ``pool`` or ``front``)."""
        return os.path.join(self.directory, f"{who}.key")

    def secret(self, who: str) -> str:
        """The secret key file of ``who`` (it holds the public key too)."""
        return os.path.join(self.directory, f"{who}.key_secret")

    @property
    def server_public(self) -> str:
        """What a pool's ``--server-key`` names."""
        return self.public("server")

    def files(self) -> list[str]:
        return [f(w) for w in ("server", "pool", "front") for f in (self.public, self.secret)]


_WHO = ("server", "pool", "front")
_BANNER = ("#   ****  Generated by rankpool {version} for one run  ****\n"
           "#   ZeroMQ CURVE {kind} Certificate\n"
           "#   Readable by its owner only; a new one is made for every run.\n\n")


def make_keys(run_dir: str) -> CurveKeys:
    """Make this run's key pairs in ``<run_dir>/curve`` (replacing any older ones); return them.

    The directory is created 0700 (an existing one must be ours; it is tightened to 0700),
    and every file is written 0600 under a temporary name, then renamed into place.
    """
    require_curve()
    keys = CurveKeys.at(os.path.join(run_dir, CURVE_DIR))
    try:
        private_dir(keys.directory)
    except RunDirError as exc:
        raise KeyFileError(exc.path, f"{exc.reason}; refusing to keep keys there") from None
    for who in _WHO:
        public, secret = zmq.curve_keypair()
        _write_key(keys.public(who), public, None)
        _write_key(keys.secret(who), public, secret)
    return keys


def _write_key(path: str, public: bytes, secret: bytes | None) -> None:
    kind = "**Secret**" if secret else "Public"
    text = _BANNER.format(version=__version__, kind=kind) + "metadata\ncurve\n" \
        f'    public-key = "{public.decode()}"\n'
    if secret:
        text += f'    secret-key = "{secret.decode()}"\n'
    write_private(path, text)


def _check_key(path: str, key: bytes | None, what: str) -> bytes:
    if key is None or len(key) != 40:
        raise KeyFileError(path, f"no valid {what} (40 Z85 characters) in it")
    try:
        z85.decode(key)
    except (ValueError, KeyError, struct.error):
        raise KeyFileError(path, f"its {what} is not Z85 text") from None
    return key


def _load(path: str) -> tuple[bytes, bytes | None]:
    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(path, f"cannot read a CurveZMQ key from it: {exc}") from None


def load_public(path: str) -> bytes:
    """The public key (Z85) in a key file."""
    public, _ = _load(path)
    return _check_key(path, public, "public key")


def load_secret(path: str) -> tuple[bytes, bytes]:
    """``(public, secret)`` from a secret key file that only its owner may read."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise KeyFileError(path, f"cannot read the secret key: {exc.strerror}") from None
    if mode & 0o077:
        raise KeyFileError(path, f"a secret key file must be readable by its owner only, but its "
                                 f"mode is {stat.S_IMODE(mode):04o}; run chmod 600 on it")
    public, secret = _load(path)
    secret = _check_key(path, secret, "secret key")
    public = _check_key(path, public, "public key")
    if zmq.curve_public(secret) != public:
        raise KeyFileError(path, "its public key does not belong to its secret key")
    return public, secret


# -- the client side ------------------------------------------------------------------------------
def client_curve(sock: zmq.Socket[Any], server_key: str, client_key: str | None = None) -> None:
    """Make ``sock`` (not yet connected) a CurveZMQ client of the interchange.

    ``server_key`` is the interchange's public key file; ``client_key`` this side's secret
    key file, by default the pools' shared ``pool.key_secret`` beside ``server_key``.
    """
    require_curve(f"--server-key {server_key}")
    server_public = load_public(server_key)
    if client_key is None:
        client_key = CurveKeys.at(os.path.dirname(os.path.abspath(server_key))).secret("pool")
    public, secret = load_secret(client_key)
    sock.curve_serverkey = server_public
    sock.curve_publickey = public
    sock.curve_secretkey = secret


# -- the interchange's side -----------------------------------------------------------------------
Step = tuple[str, "zmq.Socket[bytes]", Callable[[list[zmq.Frame]], None]]


class Gatekeeper:
    """The interchange's CurveZMQ: server keys, the ZAP handler, the log of refused peers.

    Build it on the interchange's context *before* any socket binds (libzmq may let every
    CurveZMQ client in while no ZAP handler exists), apply :meth:`setup` to each ROUTER
    before it binds, and poll the sockets of :meth:`steps` in the loop. ``warner()`` makes
    the function that logs refusals; one is made per port and cause, so that a peer retrying
    with a wrong key for ever (the interchange passes rate-limited ones) cannot hide others.
    """

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], curve_dir: str,
                 warner: Callable[[], Callable[..., None]] | None = None) -> None:
        require_curve("curve_dir is set")
        keys = CurveKeys.at(curve_dir)
        _, self._secret = load_secret(keys.secret("server"))
        self.allowed = {"pool": load_public(keys.public("pool")),
                        "front": load_public(keys.public("front"))}
        self._warner = warner or (lambda: log.warning)
        self._warners: dict[tuple[str, str], Callable[..., None]] = {}
        self.refused = 0
        self._monitors: list[tuple[str, zmq.Socket[bytes], zmq.Socket[bytes]]] = []
        self.zap: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
        self.zap.setsockopt(zmq.LINGER, 0)
        self.zap.bind(ZAP_ENDPOINT)

    def setup(self, name: str) -> Callable[[zmq.Socket[bytes]], None]:
        """What to do to the ``name`` socket before it binds: :meth:`secure` and :meth:`watch`."""
        def _setup(sock: zmq.Socket[bytes]) -> None:
            self.secure(sock, name)
            self.watch(sock, name)
        return _setup

    def secure(self, sock: zmq.Socket[bytes], name: str) -> None:
        """Make ``sock`` (before it binds) a CurveZMQ server whose peers the ZAP handler checks."""
        sock.curve_server = True
        sock.curve_secretkey = self._secret
        sock.zap_domain = DOMAINS[name]
        if hasattr(zmq, "ZAP_ENFORCE_DOMAIN"):  # no handler: refuse, not admit
            sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)

    def watch(self, sock: zmq.Socket[bytes], name: str) -> None:
        """Log the failed handshakes of ``sock`` (peers without keys never reach ZAP)."""
        self._monitors.append((name, sock, sock.get_monitor_socket(HANDSHAKE_EVENTS)))

    def steps(self) -> list[Step]:
        """``(name, socket, handler)`` for the interchange's poll loop."""
        steps: list[Step] = [("authentication", self.zap, self.on_zap)]
        for name, _, mon in self._monitors:
            steps.append((f"{name} monitor", mon, partial(self.on_event, name)))
        return steps

    def on_zap(self, frames: list[zmq.Frame]) -> None:
        """Answer one ZAP request: 200 for this run's key on the right port, 400 otherwise."""
        parts = [f.bytes for f in frames]
        if len(parts) < 8 or parts[1] != b"" or parts[2] != b"1.0":
            raise ProtocolError(f"malformed ZAP request of {len(parts)} frames")
        route, _, version, request_id, domain, address, _, mechanism = parts[:8]
        credentials = parts[8:]
        peer = address.decode(errors="replace") or "an unknown address"
        port = next((n for n, d in DOMAINS.items() if d == domain), repr(domain))
        key = z85.encode(credentials[0]) if mechanism == b"CURVE" and credentials \
            and len(credentials[0]) == 32 else b""
        wanted = _KEY_OF_DOMAIN.get(domain)
        if key and wanted is not None and key == self.allowed[wanted]:
            status, text = b"200", b"OK"
            log.debug("accepted a %s connection from %s", port, peer)
        else:
            status, text = b"400", b"not a key of this run"
            self.refused += 1
            why = (f"its CurveZMQ key {key[:8].decode()}... is not this run's {wanted} key"
                   if key else f"mechanism {mechanism.decode(errors='replace')!r} is not allowed")
            self.warn(port, "key" if key else "mechanism",
                      "refused a connection from %s on the %s port: %s", peer, port, why)
        self.zap.send_multipart([route, b"", version, request_id, status, text, b"", b""])

    def on_event(self, name: str, frames: list[zmq.Frame]) -> None:
        """Log one failed handshake on the ``name`` port (ZAP refusals are logged by on_zap)."""
        if len(frames) != 2 or len(frames[0].bytes) != 6:
            raise ProtocolError("malformed socket monitor event")
        event, value = struct.unpack("=Hi", frames[0].bytes)
        endpoint = frames[1].bytes.decode(errors="replace")
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return
        if event == zmq.EVENT_DISCONNECTED:
            log.info("a connection on the %s port closed (%s): its peer left, or sent a message "
                     "part over max_message_size, which ZeroMQ refuses by closing the connection",
                     name, endpoint)
            return
        self.refused += 1
        if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            code = value & 0xFFFFFFFF
            why = _WHY_PROTOCOL.get(code, f"ZeroMQ protocol error 0x{code:08x}")
        else:  # e.g. a peer without CurveZMQ that saw the mismatch first and hung up
            detail = os.strerror(value) if value > 0 else "no detail"
            why = (f"the connection broke during the handshake ({detail}); a peer without "
                   "this run's keys may hang up like this")
        self.warn(name, f"{event}:{value}", "refused a connection on the %s port (%s): %s", name,
                  endpoint, why)

    def warn(self, port: str, cause: str, msg: str, *args: Any) -> None:
        """Log a refusal through the warner of its port and cause."""
        warn = self._warners.get((port, cause))
        if warn is None:
            warn = self._warners[(port, cause)] = self._warner()
        warn(msg, *args)

    def close(self) -> None:
        """Close the monitors and the ZAP handler (before the context terminates)."""
        for _, sock, mon in self._monitors:
            try:
                sock.disable_monitor()
            except zmq.ZMQError:
                pass
            mon.close(linger=0)
        self._monitors.clear()
        self.zap.close(linger=0)


def open_gate(ctx: zmq.Context[zmq.Socket[bytes]], curve_dir: str, address: str,
              warner: Callable[[], Callable[..., None]] | None = None) -> Gatekeeper | None:
    """The interchange's :class:`Gatekeeper` when ``curve_dir`` is set; else None, with a
    warning in the interchange's log when pools would connect over the network in the clear."""
    if curve_dir:
        return Gatekeeper(ctx, curve_dir, warner)
    if not is_loopback(address):
        log.warning("pools connect to %s unencrypted and unauthenticated: anyone who reaches "
                    "the pool port can read tasks and results and register a pool", address)
    return None
