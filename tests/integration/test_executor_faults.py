"""``rankpool.Executor`` refusing strangers: a pool of the wrong version, and garbage sent to
the interchange's three ports. (Pools and the interchange killed, ranks dying and hanging:
``tests/faults``.)

Heartbeats are fast (period 0.2 s, threshold 2 s) so that losses show within seconds; every
wait is bounded and every test checks that no process is left behind.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
from helpers import FAST, descendants, executor, wait_for, wait_no_new_children
from raw_batches import raw_results, raw_tasks

from rankpool import BrokenPool, Executor, VersionMismatch, __version__
from rankpool.launchers.mpiexec import find_mpiexec
from rankpool.protocol.messages import PROTOCOL_VERSION, PYTHON_VERSION, Register, Stop
from rankpool.protocol.wire import decode_header
from rankpool.security import CurveKeys, client_curve

pytestmark = pytest.mark.mpi

THRESHOLD = FAST["heartbeat_threshold"]
BAD_VERSION = "0.0.0-bad"


def nap(seconds: float) -> int:
    import os
    import time
    time.sleep(seconds)
    return os.getpid()


def simulate(n: int, comm: Any = None) -> int:
    return comm.allreduce(n)


# -- a pool of the wrong version ------------------------------------------------------------------
_BAD_POOL = (
    "import sys\n"
    "import rankpool._version, rankpool.mpi_pool.joining as joining\n"
    f"rankpool._version.__version__ = joining.__version__ = {BAD_VERSION!r}\n"
    "from rankpool.mpi_pool.__main__ import main\n"
    "sys.exit(main(sys.argv[1:]))\n")


def _run_bad_pool(ex: Executor, block_id: str) -> subprocess.CompletedProcess[str]:
    """A pool of another rankpool version that holds the run's key (so it gets to register)."""
    argv = [find_mpiexec(), "-n", "2", sys.executable, "-c", _BAD_POOL, "--interchange",
            ex.client.pool_address, "--block-id", block_id, "--heartbeat-period", "0.2",
            "--heartbeat-threshold", "2", "--server-key", ex.pool_config.server_key]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


@pytest.mark.timeout(60)
def test_pool_of_wrong_version_is_refused_and_reported(tmp_path: Path) -> None:
    before = descendants()
    with executor(tmp_path) as ex:
        assert ex.submit(pow, 2, 3).result(timeout=20) == 8
        proc = _run_bad_pool(ex, "bad")
        # the pool says why, naming both versions
        assert "refused" in proc.stderr
        assert f"interchange has {__version__}" in proc.stderr
        assert f"pool has {BAD_VERSION}" in proc.stderr
        # it never joined
        assert [p["block_id"] for p in ex.pools()] == ["0"]
        # a stranger's pool refused does not break the executor: it keeps serving
        assert ex.submit(pow, 2, 4).result(timeout=20) == 16
        assert ex._broken is None
    wait_no_new_children(before)


@pytest.mark.timeout(60)
def test_pool_of_wrong_version_exits_nonzero(tmp_path: Path) -> None:
    with executor(tmp_path) as ex:
        proc = _run_bad_pool(ex, "bad")
        assert "version mismatch" in proc.stderr
        assert proc.returncode != 0, proc.stderr


@pytest.mark.timeout(60)
def test_version_mismatch_cause_has_structured_versions(tmp_path: Path) -> None:
    """What VersionMismatch carries once the executor reports a refused pool."""
    with executor(tmp_path) as ex:
        _run_bad_pool(ex, "0")  # claims to be the executor's own block
        wait_for(lambda: ex._broken is not None, timeout=10)
        with pytest.raises(BrokenPool) as info:
            ex.submit(pow, 2, 3)
        assert "block 0" in str(info.value) and BAD_VERSION in str(info.value)
        cause = ex._broken.cause  # type: ignore[union-attr]
        assert isinstance(cause, VersionMismatch)
        assert (cause.what, cause.ours, cause.theirs) == ("rankpool version", __version__,
                                                          BAD_VERSION), str(cause)


# -- garbage on the interchange's ports -----------------------------------------------------------
class Raw:
    """A raw DEALER on one of the interchange's ports, holding the run's key for that port: a
    peer that got in (a buggy pool or front-end) and sends whatever it likes."""

    def __init__(self, ctx: zmq.Context, ex: Executor, port: str,
                 identity: bytes | None = None) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if identity is not None:
            self.sock.setsockopt(zmq.IDENTITY, identity)
        server_key = ex.pool_config.server_key
        who = "pool" if port == "pool_port" else "front"
        client_curve(self.sock, server_key,
                     CurveKeys.at(os.path.dirname(server_key)).secret(who))
        self.sock.connect(f"tcp://127.0.0.1:{ex.client.ports[port]}")

    def send(self, *frames: bytes) -> None:
        self.sock.send_multipart(list(frames))

    def received(self, timeout: float = 0.0) -> list[list[bytes]]:
        """Whatever the interchange sent to this socket (waiting up to ``timeout`` for it)."""
        got = []
        while self.sock.poll(int(timeout * 1000)):
            got.append(self.sock.recv_multipart())
            timeout = 0
        return got


def _h(body: Any) -> bytes:
    return json.dumps(body).encode()


def _malformed(rng: random.Random) -> list[list[bytes]]:
    """Frames that are not even a header: random bytes, bad JSON, JSON that is no message."""
    return [
        [rng.randbytes(n)] for n in (0, 1, 7, 64, 4096)] + [
        [rng.randbytes(16), rng.randbytes(100), b""],
        [rng.randbytes(1 << 20)],
        [b"{"], [b'{"k": '], [b"\xff\xfe{}"], [b"null"], [b"[1, 2, 3]"], [b'"tasks"'],
        [b"{}"], [_h({"k": 7})], [_h({"kind": "tasks"})], [b"1e999999"],
    ]


def _bad_fields_for_pools(me: str) -> list[list[bytes]]:
    """Headers with a kind but bad fields, as a stranger on the pool port would send them."""
    reg = Register(PROTOCOL_VERSION, __version__, PYTHON_VERSION, "junk", me, ["h"], [2], 2, 2)
    good = json.loads(reg.encode()[0])
    return [
        [_h({"k": "nonsense"})],
        [_h({"k": "register"})],
        [_h({**good, "widest": "two"})],
        [_h({**good, "node_ranks": "2"})],
        [_h({**good, "node_ranks": [-1]})],          # valid types, refused shape
        [_h({**good, "widest": 9})],                   # wider than its ranks
        [_h({**good, "hosts": [1, 2]})],
        [_h({**good, "block_id": ""})],
        [_h({"k": "heartbeat"})],                     # from a pool nobody knows
        [_h({"k": "stop", "reason": "bye"})],
        raw_results([[1, 0, 1, 5, 0]], b"abcde"),  # results of an unknown pool
        [_h({"k": "results"})],
        [_h({"k": "tasks", "n": 0}), b""],
        [_h({"k": "heartbeat"}), b"extra", b"frames"],
    ]


def _truncated_results() -> list[list[bytes]]:
    """Result batches from a registered pool whose records and frames disagree."""
    return [
        raw_results([[10**12, 0, 1, 50, 0]], b"abc"),                  # runs past the blob
        raw_results([[10**12 + 1, 0, 1, 3, 2]], b"abc", extra=[b"x"]),  # a buffer missing
        [_h({"k": "results", "n": 1})],                                   # no blob at all
        raw_results([[10**12 + 2, 0, 1, 3, 0]], b"abc", n=2),           # rows past the blob
        [_h({"k": "results", "n": "5"}), b"abc"],
        raw_results([[10**12 + 3, 0, 8, 3, 0]], b"abc"),                # unknown flags
        raw_results([[10**12 + 4, 0, 1, 3, 0]], b"abc", extra=[b"surplus"]),
    ]


def _bad_commands() -> list[list[bytes]]:
    return [
        [_h({"k": "command", "name": "nonsense", "arg": ""})],
        [_h({"k": "command", "name": "hold", "arg": "no-such-block"})],
        [_h({"k": "command", "name": "drain", "arg": "no-such-block"})],
        [_h({"k": "command", "name": 5, "arg": []})],
        [_h({"k": "command"})],
        [_h({"k": "heartbeat"})],
        [_h({"k": "command", "name": "pools", "arg": ""}), b"extra frame"],
    ]


@pytest.mark.timeout(90)
def test_garbage_on_every_port_does_not_stop_the_interchange(tmp_path: Path) -> None:
    rng = random.Random(1234)
    before = descendants()
    ctx = zmq.Context()
    try:
        with executor(tmp_path) as ex:
            assert ex.submit(pow, 2, 3).result(timeout=20) == 8
            # tasks in flight all along: the garbage must not disturb them
            busy = [ex.submit(nap, 0.2) for _ in range(10)]

            pool = Raw(ctx, ex, "pool_port", b"stranger")
            for frames in _malformed(rng) + _bad_fields_for_pools("stranger"):
                pool.send(*frames)
            client = Raw(ctx, ex, "client_port")
            for frames in _malformed(rng):  # not a header: dropped before anything else
                client.send(*frames)
            command = Raw(ctx, ex, "command_port")
            for frames in _malformed(rng):
                command.send(*frames)
            for frames in _bad_commands():
                command.send(*frames)
            # every well-formed command gets an answer, and that answer is an error
            replies: list[list[bytes]] = []
            wait_for(lambda: replies.extend(command.received(0.05)) or
                     len(replies) >= len(_bad_commands()), timeout=10)
            decoded = [decode_header(r[0]) for r in replies]
            assert all(r["k"] == "reply" and r["error"] for r in decoded), decoded
            # the stranger's three registrations of a bad shape were refused, saying why; the
            # rest of its messages were dropped without an answer
            refusals: list[list[bytes]] = []
            wait_for(lambda: refusals.extend(pool.received(0.05)) or len(refusals) >= 3,
                     timeout=10)
            decoded = [decode_header(r[0]) for r in refusals + pool.received(0.2)]
            assert len(decoded) == 3, decoded
            assert all(r["k"] == "registered" and r["error"] for r in decoded), decoded

            assert [f.result(timeout=30) for f in busy] and all(f.exception() is None for f in busy)

            # a pool that registers properly, then sends truncated result batches and leaves
            fake = Raw(ctx, ex, "pool_port", b"fake-pool")
            reg = Register(PROTOCOL_VERSION, __version__, PYTHON_VERSION, "fake", "fake-pool",
                           ["nowhere"], [1], 1, 1)
            fake.send(*reg.encode())
            answer = decode_header(wait_for(lambda: fake.received(0.1), timeout=10)[0][0])
            assert answer["k"] == "registered" and answer["error"] == ""
            ex.client.command("hold", "fake")  # no task of ours goes to it
            for frames in _truncated_results():
                fake.send(*frames)
            fake.send(*Stop("leaving").encode())
            wait_for(lambda: [p["block_id"] for p in ex.pools()] == ["0"], timeout=10)
            fake.send(_h({"k": "heartbeat"}))  # from a pool now lost: dropped

            # the interchange is alive and routes correctly: 1-rank and 2-rank tasks, in order
            assert ex.client.proc.poll() is None  # type: ignore[union-attr]
            assert list(ex.map(pow, range(30), [2] * 30, timeout=30)) == [i * i for i in range(30)]
            assert ex.requirements(num_ranks=2).submit(simulate, 3).result(timeout=20) == 6
            assert ex.outstanding() == 0
            assert ex._broken is None
            assert client.received(0) == []  # nothing meant for the front-end went astray
    finally:
        ctx.destroy(linger=0)
    wait_no_new_children(before)


@pytest.mark.timeout(60)
def test_bad_headers_on_the_client_port_do_not_divert_results(tmp_path: Path) -> None:
    ctx = zmq.Context()
    garbage = [
        [_h({"k": "nonsense"})],
        [_h({"k": "tasks"})],
        raw_tasks([[10**12, 0, 0, 5, 0]], data=b"abc", fn_table=[["00", 10]]),
        raw_tasks([[10**12, 0, 0, 0, 0]], fns=[], specs=[]),
        [_h({"k": "stop"})],
        [_h({"k": "heartbeat"}), b"extra"],
    ]
    try:
        with executor(tmp_path) as ex:
            assert ex.submit(pow, 2, 3).result(timeout=20) == 8
            raw = Raw(ctx, ex, "client_port")
            futures = [ex.submit(nap, 0.3) for _ in range(10)]
            stolen: list[list[bytes]] = []
            deadline = time.monotonic() + 3 * THRESHOLD
            while not all(f.done() for f in futures) and time.monotonic() < deadline:
                for frames in garbage:
                    raw.send(*frames)
                stolen += raw.received(0.01)
            assert stolen == [], [m[0][:80] for m in stolen[:5]]
            assert ex._broken is None
            # each task returns its rank's pid (the flood may end first on a busy machine)
            assert all(isinstance(f.result(timeout=60), int) for f in futures)
    finally:
        ctx.destroy(linger=0)


# -- blocks that cannot start ----------------------------------------------------------------------
def test_missing_mpiexec_is_refused_before_anything_starts(tmp_path: Path) -> None:
    from rankpool.launchers.mpiexec import MpiexecNotFound
    before = descendants()
    with pytest.raises(MpiexecNotFound, match="nope/mpiexec"):
        Executor(max_ranks=2, run_dir=str(tmp_path / "run"), mpiexec=str(tmp_path / "nope" /
                                                                          "mpiexec"))
    assert descendants() <= before  # no interchange left running


def test_block_whose_mpiexec_fails_fails_the_futures_with_its_words(tmp_path: Path) -> None:
    """An ``mpiexec`` that exits at once (a broken install) ends the block before its pool
    registers: the futures fail with what it printed, and no block is started again."""
    from rankpool import BlockStartFailed
    from rankpool.protocol.starts import StartCause
    fake = tmp_path / "mpiexec"
    fake.write_text("#!/bin/sh\necho \"mpiexec: error while loading shared libraries: "
                    "libhydra.so\" >&2\nexit 127\n")
    fake.chmod(0o755)
    with executor(tmp_path / "run", mpiexec=str(fake)) as ex:
        future = ex.submit(pow, 2, 3)
        with pytest.raises(BrokenPool) as broken:
            future.result(timeout=30)
        assert ex._blocks is not None and ex._blocks._next == 1  # no replacement block
        with pytest.raises(BrokenPool):
            ex.submit(pow, 2, 3)
    cause = broken.value.cause
    assert isinstance(cause, BlockStartFailed) and cause.cause is StartCause.JOB_ENDED
    assert "libhydra.so" in str(broken.value) and "exited with code 127" in str(broken.value)
    assert "block 0 could not start" in str(broken.value)


#: a sitecustomize that makes one pool rank die as the pool starts (see its docstring)
START_FAULT = Path(__file__).resolve().parent.parent / "rank_start_fault"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("how", "said"), [("exit3", "exited with status 3"),
                                           ("SIGSEGV", "was killed by signal 11 (SIGSEGV)")])
def test_a_rank_that_dies_as_the_pool_starts_fails_the_futures_with_how(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str, said: str) -> None:
    """Rank 1 dies before MPI_Init. The launch options that let a pool outlive a rank's death
    (``-disable-auto-cleanup``) would leave rank 0 waiting for it in ``MPI_Init`` for ever: the
    dead rank's keeper ends the launch, and the futures fail within seconds with its words."""
    from rankpool import BlockStartFailed
    from rankpool.protocol.starts import StartCause
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(START_FAULT), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("RANKPOOL_TEST_DIE_AT_START", f"1:{how}")
    before = descendants()
    with executor(tmp_path / "run") as ex:
        future = ex.submit(pow, 2, 3)
        with pytest.raises(BrokenPool) as broken:
            future.result(timeout=30)
    cause = broken.value.cause
    assert isinstance(cause, BlockStartFailed) and cause.cause is StartCause.RANK_DIED
    text = str(broken.value)
    assert "block 0 could not start" in text, text
    assert f"{said} before the pool started; the other ranks would wait for it for ever" \
        in text, text
    wait_no_new_children(before)


def test_pool_that_cannot_reach_the_interchange_fails_the_futures(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool is given an address nobody answers on (a wrong address or a firewall): it
    gives up after the heartbeat threshold, and the futures fail naming that address."""
    import socket

    from rankpool import BlockStartFailed
    from rankpool.frontends.client import InterchangeClient
    from rankpool.protocol.starts import StartCause
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        bad = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setattr(InterchangeClient, "pool_address", property(lambda self: bad))
    start = time.monotonic()
    with executor(tmp_path / "run") as ex:
        future = ex.submit(pow, 2, 3)
        with pytest.raises(BrokenPool) as broken:
            future.result(timeout=60)
    assert time.monotonic() - start < 60
    cause = broken.value.cause
    assert isinstance(cause, BlockStartFailed) and cause.cause is StartCause.UNREACHABLE
    assert f"no answer from the interchange at {bad} for {THRESHOLD:g} s" in str(broken.value)
