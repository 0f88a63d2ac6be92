"""Another user of the machine attacks a running rankpool run: ``python attacker.py`` (as root).

The program imports what it needs, then at once becomes ``nobody`` (uid and gid 65534, no
supplementary groups) and only then reads its plan on stdin: JSON with the run's directory,
its ports, a pool's id, and the file, shared-memory and marker paths to try. It prints one
JSON object: what each attempt got. Nothing in it may succeed.

Why it imports before dropping privileges: the interpreter and its standard library live in a
directory only root may enter here (``/root/.pyenv``), so a process that was ``nobody`` from
the start could not run Python at all. Importing first gives the attacker code only: a fresh
interpreter started with no inherited descriptors (``close_fds``) and no secrets; it looks at
nothing of the run before it is ``nobody``, and it asserts that it cannot become root again.
It knows the run's ports and a pool's id, which the test hands it: the worst case, as if it
had found them (``ss -ltn``, ``ps``), since it cannot read ``interchange.json``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import pwd  # noqa: F401  (the status command names the run's owner with it)
import shutil  # noqa: F401  (argparse's help formatter imports it as the CLI's parser is built)
import socket
import sys
import time
import traceback
from typing import Any

import zmq

from rankpool import cli
from rankpool import security as _security  # noqa: F401
from rankpool._version import __version__
from rankpool.frontends import client as _client  # noqa: F401  (the status command needs it)
from rankpool.launchers import rundir as _rundir  # noqa: F401
from rankpool.protocol.batches import Task, encode_tasks
from rankpool.protocol.messages import PROTOCOL_VERSION, PYTHON_VERSION, Cancel, Command, Register
from rankpool.protocol.result_batches import Outcome, Result, encode_results
from rankpool.protocol.wire import decode_header
from rankpool.task.resources import parse_spec

NOBODY = 65534
#: how long each attempt waits for an answer that must not come
LISTEN = 1.5


def become_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    assert os.getuid() == os.geteuid() == NOBODY and os.getgid() == NOBODY
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise AssertionError("could become root again")


class Evil:
    """Unpickling this in the submitting program would create ``path``: the attack's goal."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.path}",))


def dealer(ctx: zmq.Context, port: int, identity: bytes | None = None,
           curve: bool = False) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if identity:
        sock.setsockopt(zmq.IDENTITY, identity)
    if curve:  # a CurveZMQ client with keys of its own, guessing the server's
        sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
        sock.curve_serverkey = zmq.curve_keypair()[0]
    sock.connect(f"tcp://127.0.0.1:{port}")
    return sock


class Attempts:
    """Attack messages sent at once on many connections, then every answer collected."""

    def __init__(self) -> None:
        self.sent: dict[str, zmq.Socket] = {}

    def send(self, what: str, sock: zmq.Socket, frames: list[Any]) -> None:
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:  # no connection took it: nothing was even sent
            pass
        self.sent[what] = sock

    def answers(self, listen: float) -> dict[str, list[str]]:
        """The kinds of the messages each attempt got back within ``listen`` seconds."""
        got: dict[str, list[str]] = {what: [] for what in self.sent}
        deadline = time.monotonic() + listen
        poller = zmq.Poller()
        for sock in set(self.sent.values()):
            poller.register(sock, zmq.POLLIN)
        while (left := deadline - time.monotonic()) > 0:
            for sock, _ in poller.poll(int(left * 1000) + 1):
                frames = sock.recv_multipart()
                try:
                    kind = str(decode_header(frames[0]).get("k"))
                except Exception:  # noqa: BLE001 - anything that came back counts
                    kind = "?"
                for what, s in self.sent.items():
                    if s is sock:
                        got[what].append(kind)
                        break
        return got


def register(pool_id: str) -> list[bytes]:
    return Register(PROTOCOL_VERSION, __version__, PYTHON_VERSION, "0", pool_id,
                    [socket.gethostname()], [64], 64, 64).encode()


def network_attacks(plan: dict[str, Any]) -> dict[str, list[str]]:
    """Every socket attack, plain and with CurveZMQ keys of the attacker's own; what each
    got back (a registered pool would get "registered", then tasks)."""
    ports, pool_id, marker = plan["ports"], plan["pool_id"], plan["marker"]
    evil = Result(1, [Outcome(0, True, pickle.dumps(Evil(marker)))])
    task = Task(10**9, parse_spec({}), b"", pickle.dumps(Evil(marker)), pickle.dumps(((), {})))
    huge = [b"x" * (64 << 20)]
    ctx = zmq.Context()
    try:
        tries = Attempts()
        for curve in (False, True):
            how = "curve" if curve else "plain"
            pool = dealer(ctx, ports["pool_port"], os.urandom(8).hex().encode(), curve)
            tries.send(f"register a pool ({how})", pool, register(f"evil.{how}"))
            tries.send(f"register with an existing pool's id ({how})",
                       dealer(ctx, ports["pool_port"], pool_id.encode(), curve), register(pool_id))
            front = dealer(ctx, ports["client_port"], None, curve)
            tries.send(f"a result on the front-end port ({how})", front, encode_results([evil]))
            tries.send(f"a task on the front-end port ({how})",
                       dealer(ctx, ports["client_port"], None, curve), encode_tasks([task]))
            tries.send(f"cancel on the front-end port ({how})",
                       dealer(ctx, ports["client_port"], None, curve),
                       Cancel(list(range(1, 1000))).encode())
            for name, arg in (("stop", ""), ("hold", "0"), ("drain", "0"), ("pools", "")):
                tries.send(f"command {name} ({how})",
                           dealer(ctx, ports["command_port"], None, curve),
                           Command(name, arg).encode())
            for port in ("pool_port", "client_port", "command_port"):
                tries.send(f"an oversized message on the {port} ({how})",
                           dealer(ctx, ports[port], None, curve), huge)
        first = tries.answers(LISTEN)
        # a registered pool would have been sent tasks; it answers with a result of its own
        pools = {how: tries.sent[f"register a pool ({how})"] for how in ("plain", "curve")}
        tries.sent = {}
        for how, sock in pools.items():
            tries.send(f"a result on the pool port ({how})", sock, encode_results([evil]))
        return {**first, **tries.answers(LISTEN)}
    finally:
        ctx.destroy(linger=0)


def ring_doorbells(rings: int = 2000) -> int:
    """Ring every rankpool bell the host lists (abstract names are public); how many."""
    with open("/proc/net/unix", "rb") as fh:  # bytes: no codec left to import as nobody
        names = {line.split()[-1][1:].decode() for line in fh if b"@rankpool-" in line}
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    for name in names:
        for _ in range(rings):
            try:
                sock.sendto(b"!", socket.MSG_DONTWAIT, "\0" + name)
            except OSError:
                break
    return len(names)


def read(path: str) -> str:
    """What reading ``path`` (a directory: listing it) gives: an errno name, or 'read'."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            os.listdir(path)
        else:
            with open(path, "rb") as fh:
                fh.read(1)
        return "read"
    except OSError as exc:
        return exc.__class__.__name__


def status(run_dir: str) -> tuple[int, str]:
    """``rankpool status RUN_DIR --once``, in this process; its exit status and stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["status", run_dir, "--once", "--timeout", "2"])
    return code, err.getvalue()


def main() -> int:
    become_nobody()
    plan = json.loads(sys.stdin.read())
    report: dict[str, Any] = {"uid": os.getuid()}
    try:
        report["network"] = network_attacks(plan)
        report["doorbells"] = ring_doorbells()
        report["files"] = {p: read(p) for p in plan["paths"]}
        shm = sorted(n for n in os.listdir("/dev/shm") if n.startswith(plan["shm_prefix"]))
        report["shm"] = {n: read(os.path.join("/dev/shm", n)) for n in shm}
        report["status"] = status(plan["run_dir"])
    except Exception:  # noqa: BLE001 - the test shows it
        report["error"] = traceback.format_exc()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
