"""Bounded messages and pool ids that cannot be taken: an interchange in a thread with the
run's keys, and an Executor whose message cap is small enough to reach.

* A second registration under a pool id another connection holds is refused and logged; the
  first pool keeps its tasks. A second connection under a pool's connection name is ignored.
* A message over ``max_message_size`` is dropped and logged (several parts), or closes its
  sender's connection (one part); the interchange's memory does not take it.
* ``Executor(max_message_size=...)``: a task over the cap is refused at submit, a result over
  it fails its task, both with ``MessageTooLarge``; many tasks and results that each fit
  travel in messages under the cap.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from helpers import executor, wait_for

from rankpool._version import __version__
from rankpool.errors import MessageTooLarge
from rankpool.interchange import Interchange, InterchangeConfig
from rankpool.protocol.batches import Task, decode_tasks, encode_tasks
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
from rankpool.security import CurveKeys, client_curve, make_keys
from rankpool.task.resources import parse_spec

pytestmark = [pytest.mark.skipif(not zmq.has("curve"), reason="pyzmq built without CurveZMQ"),
              pytest.mark.timeout(180)]

MB = 1 << 20


def nbytes_of(data: bytes) -> int:
    return len(data)


def blob(n: int) -> bytes:
    return bytes(n)


def register(pool_id: str, block_id: str, node_ranks: tuple[int, ...]) -> list[bytes]:
    return Register(PROTOCOL_VERSION, __version__, PYTHON_VERSION, block_id, pool_id,
                    ["h0"], list(node_ranks), sum(node_ranks), max(node_ranks)).encode()


def task(task_id: int) -> Task:
    return Task(task_id, parse_spec({}), b"d", b"f", b"a")


class Live:
    """An interchange in a thread; DEALERs with the run's keys."""

    def __init__(self, keys: CurveKeys, **config: Any) -> None:
        self.keys = keys
        self.ix = Interchange(InterchangeConfig(curve_dir=keys.directory, heartbeat_period=0.5,
                                                heartbeat_threshold=60.0, **config))
        self.pool_port, self.client_port, self.command_port = self.ix.bind()
        self.thread = threading.Thread(target=self.ix.run, name="rankpool-interchange-test",
                                       daemon=True)
        self.thread.start()
        self.ctx = zmq.Context()

    def dealer(self, port: int, who: str, identity: bytes | None = None) -> Any:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if identity:
            sock.setsockopt(zmq.IDENTITY, identity)
        client_curve(sock, self.keys.server_public, self.keys.secret(who))
        sock.connect(f"tcp://127.0.0.1:{port}")
        return sock

    def close(self) -> None:
        self.ix.stop()
        self.thread.join(10)
        self.ctx.destroy(linger=0)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    lv = Live(make_keys(str(tmp_path)), max_message_size=2 * MB)
    yield lv
    lv.close()


def first(sock: Any, kind: str, timeout: float = 5.0) -> Any:
    """The first message of ``kind`` to arrive (heartbeats skipped), or None."""
    while sock.poll(int(timeout * 1000)):
        frames = sock.recv_multipart()
        header = decode_header(frames[0])
        if header["k"] == kind:
            return decode_message(header) if kind != "tasks" else frames
    return None


def pools(live: Live) -> list[dict[str, Any]]:
    cmd = live.dealer(live.command_port, "front")
    cmd.send_multipart(Command("pools", "").encode())
    return first(cmd, "reply").value  # type: ignore[no-any-return]


def test_a_second_registration_of_a_pool_id_is_refused_and_logged(
        live: Live, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="rankpool")
    real = live.dealer(live.pool_port, "pool", b"secret-name-of-the-real-pool")
    real.send_multipart(register("p1", "b0", (2,)))
    assert first(real, "registered").error == ""
    # the same id over another connection (the run's key, as a pool of the run would have)
    twin = live.dealer(live.pool_port, "pool")
    twin.send_multipart(register("p1", "b9", (64,)))
    reply = first(twin, "registered")
    assert isinstance(reply, Registered) and "already registered by another connection" \
        in reply.error
    assert "refused a registration from block 'b9'" in caplog.text
    # the connection's name of the real pool: ignored while the real one is connected
    thief = live.dealer(live.pool_port, "pool", b"secret-name-of-the-real-pool")
    thief.send_multipart(Heartbeat().encode())
    # the real pool keeps its record, and gets the work
    assert [(p["pool_id"], p["block_id"], p["ranks"]) for p in pools(live)] == [("p1", "b0", 2)]
    front = live.dealer(live.client_port, "front")
    front.send_multipart(encode_tasks([task(1)]))
    assert first(real, "tasks") is not None
    assert first(thief, "tasks", timeout=1.0) is None and first(twin, "tasks", 0.5) is None


def test_tasks_of_several_batches_reach_a_pool_in_messages_under_the_cap(live: Live) -> None:
    """Batches that each fit, queued before any pool registered, then taken by one pool in one
    pass: they travel to it in messages under the cap (one message would be over it)."""
    front = live.dealer(live.client_port, "front")
    for b in range(3):  # 3 batches of 3 tasks of 0.3 MB: 0.9 MB each, 2.7 MB together
        front.send_multipart(encode_tasks([Task(10 * b + i, parse_spec({}), b"d", b"f",
                                                bytes(300_000)) for i in range(3)]))
    wait_for(lambda: len(live.ix.queue) == 9, timeout=10)
    pool = live.dealer(live.pool_port, "pool")
    pool.send_multipart(register("p1", "b0", (16,)))
    assert first(pool, "registered").error == ""
    ids: list[int] = []
    sizes: list[int] = []
    while len(ids) < 9:
        frames = first(pool, "tasks")
        assert frames is not None, f"only tasks {sorted(ids)} arrived"
        sizes.append(sum(map(len, frames)))
        ids += [t.task_id for t in decode_tasks(decode_header(frames[0]), frames[1:])]
    assert sorted(ids) == [0, 1, 2, 10, 11, 12, 20, 21, 22]
    assert max(sizes) <= 2 * MB and len(sizes) >= 2, sizes


def test_a_message_over_the_cap_is_dropped_and_logged(live: Live,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rankpool")
    pool = live.dealer(live.pool_port, "pool")
    pool.send_multipart(register("p1", "b0", (2,)))
    assert first(pool, "registered").error == ""
    # parts under the cap, the whole over it: dropped, logged, the pool stays
    pool.send_multipart([Heartbeat().encode()[0], bytes(MB), bytes(MB), bytes(MB)])
    pool.send_multipart(Heartbeat().encode())
    wait_for(lambda: "over max_message_size (2097152 bytes)" in caplog.text, timeout=10)
    assert [p["pool_id"] for p in pools(live)] == ["p1"]
    # one part over the cap: ZeroMQ closes the connection before taking it, and it is logged
    big = live.dealer(live.pool_port, "pool")
    big.send_multipart([bytes(3 * MB)])
    wait_for(lambda: "a connection on the pool port closed" in caplog.text, timeout=10)
    assert live.thread.is_alive()


def test_an_executor_refuses_tasks_and_fails_results_over_its_cap(tmp_path: Path) -> None:
    with executor(tmp_path / "run", max_ranks=2, shared_memory=False,
                  max_message_size=2 * MB) as ex:
        with pytest.raises(MessageTooLarge, match="task .* is .* bytes, over the run's "
                                                   "max_message_size of 2097152"):
            ex.submit(nbytes_of, bytes(3 * MB))
        big = ex.submit(blob, 3 * MB)
        with pytest.raises(MessageTooLarge, match="the result of task .* max_message_size"):
            big.result(timeout=60)
        # many that each fit, together far over the cap: split into messages that fit
        futures = [ex.submit(nbytes_of, bytes(MB // 2)) for _ in range(12)]
        assert [f.result(timeout=60) for f in futures] == [MB // 2] * 12
        results = [ex.submit(blob, MB // 2) for _ in range(12)]
        assert all(len(f.result(timeout=60)) == MB // 2 for f in results)
        assert ex.submit(nbytes_of, b"after").result(timeout=60) == 5
