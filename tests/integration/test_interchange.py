"""The interchange in one process over loopback: a fake front-end and fake pools around it.

Every wait is bounded (``wait_for`` or a receive with a timeout); nothing sleeps to synchronise.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import zmq
from raw_batches import raw_results, raw_tasks
from waiting import wait_for

from rankpool._version import __version__
from rankpool.interchange import Interchange, InterchangeConfig
from rankpool.interchange import pools as pools_module
from rankpool.interchange.matching import RoomIndex, TaskQueue, match
from rankpool.interchange.plumbing import BACKLOG
from rankpool.interchange.pools import BEATS_PER_S, Pool, PoolTable, beat_interval, check_capacity
from rankpool.protocol.batches import Task, decode_tasks, encode_tasks, receive_tasks
from rankpool.protocol.messages import (
    PROTOCOL_VERSION,
    PYTHON_VERSION,
    SUBMIT_SUFFIX,
    Cancel,
    Cancelled,
    Capacity,
    Command,
    Drain,
    Heartbeat,
    Lost,
    LostCause,
    RefusalCause,
    Refused,
    Register,
    Registered,
    Reply,
    Stop,
    decode_message,
)
from rankpool.protocol.result_batches import Outcome, Result, encode_results, result_ids
from rankpool.protocol.task_slices import runs_of
from rankpool.protocol.wire import decode_header, encode_header
from rankpool.task.resources import DEFAULT_SPEC, parse_spec

SRC = Path(__file__).resolve().parents[2] / "src"
FAST = {"heartbeat_period": 0.1, "heartbeat_threshold": 0.5}


def make_task(task_id: int, width: int = 1, priority: int = 0, buffers: list[bytes] | None = None,
              data: bytes = b"args") -> Task:
    spec = parse_spec({"num_ranks": width, "priority": priority})
    return Task(task_id, spec, b"\x01\x02", b"fn-bytes", data + str(task_id).encode(),
                buffers or [])


def push(queue: TaskQueue, *tasks: Task) -> None:
    """Queue tasks as the interchange queues a batch of them: as its runs."""
    frames = [bytes(f) for f in encode_tasks(list(tasks))]
    queue.push_many(runs_of(receive_tasks(decode_header(frames[0]), frames[1:], frames)))


def make_result(task_id: int, value: bytes = b"value",
                buffers: list[bytes] | None = None) -> Result:
    return Result(task_id, [Outcome(0, True, value + str(task_id).encode(), buffers or [])])


class Peer:
    """A DEALER connected to one of the interchange's ROUTERs."""

    def __init__(self, ctx: zmq.Context, port: int, identity: bytes | None = None,
                 group: list[Peer] | None = None) -> None:
        self.group = [] if group is None else group  # peers that heartbeat while any one waits
        self.group.append(self)
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if identity is not None:
            self.sock.setsockopt(zmq.IDENTITY, identity)
        self.sock.connect(f"tcp://127.0.0.1:{port}")
        self.beat_every: float | None = None  # send heartbeats while waiting
        self._last_beat = 0.0

    def send(self, frames: list[Any]) -> None:
        self.sock.send_multipart(frames)

    def maybe_beat(self) -> None:
        """Send the heartbeats due from every peer of the group."""
        now = time.monotonic()
        for peer in self.group:
            if peer.beat_every is not None and now - peer._last_beat >= peer.beat_every:
                peer._last_beat = now
                peer.send(Heartbeat().encode())

    def recv(self, timeout: float = 5.0,
             skip_beats: bool = True) -> tuple[dict[str, Any], list[bytes]]:
        """The next message as (header, all frames); heartbeats skipped unless asked for."""
        deadline = time.monotonic() + timeout
        while True:
            self.maybe_beat()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"nothing received within {timeout} s")
            if self.sock.poll(min(left, 0.02) * 1000):
                frames = self.sock.recv_multipart()
                header = decode_header(frames[0])
                if skip_beats and header["k"] == "heartbeat":
                    continue
                return header, frames

    def nothing(self, within: float = 0.3, skip_beats: bool = True) -> bool:
        """True if no (non-heartbeat) message arrives within ``within`` seconds."""
        try:
            header, _ = self.recv(within, skip_beats)
        except AssertionError:
            return True
        raise AssertionError(f"unexpected message {header!r:.300}")


class FakePool(Peer):
    def __init__(self, ctx: zmq.Context, port: int, pool_id: str,
                 group: list[Peer] | None = None) -> None:
        super().__init__(ctx, port, pool_id.encode(), group)
        self.pool_id = pool_id

    def register(self, block_id: str = "b0", node_ranks: tuple[int, ...] = (4,),
                 widest: int | None = None, rankpool: str = __version__,
                 expect_ok: bool = True) -> Registered:
        ranks = sum(node_ranks)
        reg = Register(protocol=PROTOCOL_VERSION, rankpool=rankpool, python=PYTHON_VERSION,
                       block_id=block_id, pool_id=self.pool_id,
                       hosts=[f"h{i}" for i in range(len(node_ranks))],
                       node_ranks=list(node_ranks), widest=ranks if widest is None else widest,
                       ranks_per_node=max(node_ranks))
        self.send(reg.encode())
        header, _ = self.recv()
        msg = decode_message(header)
        assert isinstance(msg, Registered)
        if expect_ok:
            assert msg.error == ""
        return msg

    def tasks(self, timeout: float = 5.0) -> list[Task]:
        header, frames = self.recv(timeout)
        assert header["k"] == "tasks", header
        return decode_tasks(header, frames[1:])

    def answer(self, tasks: list[Task]) -> list[bytes]:
        frames = [bytes(f) for f in encode_results([make_result(t.task_id) for t in tasks])]
        self.send(frames)
        return frames


class Front(Peer):
    def submit(self, tasks: list[Task]) -> None:
        self.send(encode_tasks(tasks))

    def message(self, timeout: float = 5.0) -> tuple[dict[str, Any], list[bytes]]:
        return self.recv(timeout)

    def lost(self, timeout: float = 5.0) -> Lost:
        header, _ = self.recv(timeout)
        msg = decode_message(header)
        assert isinstance(msg, Lost), header
        return msg


class Harness:
    """An interchange running in a thread, plus factories for peers."""

    def __init__(self, **overrides: Any) -> None:
        self.config = InterchangeConfig(**overrides)
        self.ix = Interchange(self.config)
        self.pool_port, self.client_port, self.command_port = self.ix.bind()
        self.ctx = zmq.Context()
        self.thread = threading.Thread(target=self.ix.run, name="rankpool-interchange-test",
                                       daemon=True)
        self.thread.start()
        self.peers: list[Peer] = []
        self.commander = Peer(self.ctx, self.command_port, group=self.peers)

    def pool(self, pool_id: str, **register: Any) -> FakePool:
        pool = FakePool(self.ctx, self.pool_port, pool_id, self.peers)
        pool.register(**register)
        return pool

    def front(self) -> Front:
        front = Front(self.ctx, self.client_port, group=self.peers)
        front.send(Heartbeat().encode())  # introduce itself
        wait_for(lambda: self.ix.front is not None and self.ix.front.identity is not None)
        return front

    def command(self, name: str, arg: str = "") -> Reply:
        self.commander.send(Command(name, arg).encode())
        header, _ = self.commander.recv()
        msg = decode_message(header)
        assert isinstance(msg, Reply)
        return msg

    def value(self, name: str, arg: str = "") -> Any:
        reply = self.command(name, arg)
        assert reply.error == "", reply.error
        return reply.value

    def join(self, timeout: float) -> bool:
        """Wait for run() to return, heartbeating for the peers meanwhile; True if it did."""
        deadline = time.monotonic() + timeout
        while self.thread.is_alive() and time.monotonic() < deadline:
            self.commander.maybe_beat()
            self.thread.join(0.01)
        return not self.thread.is_alive()

    def close(self) -> None:
        self.ix.stop()
        self.thread.join(5)
        assert not self.thread.is_alive(), "interchange did not stop"
        self.ctx.destroy(linger=0)


@pytest.fixture
def harness() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(**overrides: Any) -> Harness:
        h = Harness(**overrides)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


# ---------------------------------------------------------------------------------------------
def test_config_validation_and_json() -> None:
    cfg = InterchangeConfig(address="*", port_range=(50000, 50100), prefetch=4, parent_pid=1)
    assert InterchangeConfig.from_json(cfg.to_json()) == cfg
    for field, value in [("prefetch", 0), ("heartbeat_period", -1), ("pool_port", 70000),
                         ("log_level", "LOUD"), ("port_range", (5, 5)), ("address", "")]:
        with pytest.raises(ValueError, match=field):
            InterchangeConfig(**{field: value})
    with pytest.raises(ValueError, match="heartbeat_threshold"):
        InterchangeConfig(heartbeat_period=5, heartbeat_threshold=1)
    with pytest.raises(ValueError, match="bogus"):
        InterchangeConfig.from_json('{"bogus": 1}')


def test_registration_accepted(harness: Callable[..., Harness]) -> None:
    h = harness()
    pool = FakePool(h.ctx, h.pool_port, "p1")
    reg = pool.register(block_id="b1", node_ranks=(2, 3), widest=5)
    assert (reg.heartbeat_period, reg.heartbeat_threshold) == (2.0, 10.0)
    [info] = h.value("pools")
    assert info["block_id"] == "b1" and info["pool_id"] == "p1" and info["hosts"] == ["h0", "h1"]
    assert (info["ranks"], info["node_ranks"], info["widest"]) == (5, [2, 3], 5)
    assert info["rankpool"] == __version__ and info["python"] == PYTHON_VERSION
    assert not info["held"] and not info["draining"] and info["tasks"] == 0


def test_pool_port_queues_thousands_of_connections(harness: Callable[..., Harness]) -> None:
    """Pools that start together all get in at once: the pool port's listen queue (as the
    kernel reports it) is ``BACKLOG`` long, not ZeroMQ's 100, past which the kernel drops
    handshakes that TCP retries only 1, 3, 7, 15 s later."""
    h = harness()
    with open("/proc/sys/net/core/somaxconn") as fh:
        expected = min(BACKLOG, int(fh.read()))
    out = subprocess.run(["ss", "-Hltn", f"sport = :{h.pool_port}"], capture_output=True,
                         text=True, timeout=10, check=True).stdout.split()
    assert expected > 100 and int(out[2]) == expected, out  # State Recv-Q Send-Q(= the queue) ...


def test_version_mismatch_refused(harness: Callable[..., Harness]) -> None:
    h = harness()
    front = h.front()
    pool = FakePool(h.ctx, h.pool_port, "old")
    reg = pool.register(block_id="b9", rankpool="0.0.1", expect_ok=False)
    assert __version__ in reg.error and "0.0.1" in reg.error and "rankpool version" in reg.error
    header, _ = front.recv()
    refused = decode_message(header)
    assert isinstance(refused, Refused)
    assert (refused.block_id, refused.pool_id, refused.what, refused.ours, refused.theirs) == \
        ("b9", "old", "rankpool version", __version__, "0.0.1")
    lost = front.lost()
    assert (lost.block_id, lost.hosts, lost.task_ids) == ("b9", ["h0"], [])
    assert lost.reason == reg.error
    assert h.value("pools") == []
    # anything else it sends is ignored
    pool.send(Heartbeat().encode())
    assert h.value("pools") == []


def test_lost_kept_until_front_end_is_known(harness: Callable[..., Harness]) -> None:
    h = harness()
    FakePool(h.ctx, h.pool_port, "bad").register(block_id="bx", rankpool="9", expect_ok=False)
    front = h.front()
    header, _ = front.recv()
    assert decode_message(header).block_id == "bx"  # the refusal, then the pool's loss
    assert front.lost().block_id == "bx"


def test_task_round_trip_unchanged(harness: Callable[..., Harness]) -> None:
    h = harness()
    front = h.front()
    pool = h.pool("p1")
    big = os.urandom(100_000)
    front.submit([make_task(7, buffers=[big])])
    [task] = pool.tasks()
    assert (task.task_id, bytes(task.fn), bytes(task.data)) == (7, b"fn-bytes", b"args7")
    assert task.fn_digest == b"\x01\x02"
    assert [bytes(b) for b in task.buffers] == [big]
    sent = [bytes(f) for f in encode_results([make_result(7, buffers=[big[::-1]])])]
    pool.send(sent)
    header, frames = front.message()
    assert header["k"] == "results" and frames == sent
    assert h.value("outstanding") == 0 and h.value("finished") == 1


@pytest.fixture
def encoded(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The ids of every task batch the interchange encodes anew, one list per batch."""
    import rankpool.interchange.routing as ix_module
    batches: list[list[int]] = []

    def counting(tasks: list[Task], kind: str = "tasks") -> list[bytes]:
        batches.append([t.task_id for t in tasks])
        return encode_tasks(tasks, kind)

    monkeypatch.setattr(ix_module, "encode_tasks", counting)
    return batches


def test_batch_taken_whole_is_forwarded_as_it_came(harness: Callable[..., Harness],
                                                   encoded: list[list[int]]) -> None:
    """A batch that one pool takes whole leaves in the front-end's own frames; one that is cut
    (a repeated id dropped, or room for part of it) leaves as a slice of it; neither is
    encoded anew. Tasks of more batches than ``MOST_SLICES`` are encoded anew, as one."""
    h = harness(prefetch=1)
    front = h.front()
    pool = h.pool("p1", node_ranks=(4,))
    sent = [bytes(f) for f in encode_tasks([make_task(i, buffers=[b"b" * 300]) for i in range(3)])]
    front.send(sent)
    header, frames = pool.recv()
    assert header["k"] == "tasks" and frames == sent and encoded == []
    cut = encode_tasks([make_task(i, buffers=[bytes([i]) * 9]) for i in (2, 3)])
    front.send(cut)  # 2 is in flight: dropped
    header, frames = pool.recv()
    [task] = decode_tasks(header, frames[1:])
    assert task.task_id == 3 and bytes(task.data) == b"args3" and frames[2] == bytes([3]) * 9
    assert len(frames) == 3 and len(frames[1]) < len(cut[1]) and encoded == []
    pool.answer(decode_tasks(header, frames[1:]))
    front.message()
    front.send(encode_tasks([make_task(i) for i in (10, 11)]))  # room for one of them
    header, frames = pool.recv()
    assert [t.task_id for t in decode_tasks(header, frames[1:])] == [10] and encoded == []
    pool.answer(decode_tasks(header, frames[1:]))
    front.message()
    header, frames = pool.recv()  # 11, the rest of its batch, once there is room
    assert [t.task_id for t in decode_tasks(header, frames[1:])] == [11] and encoded == []


def test_tasks_of_many_batches_for_one_pool_are_encoded_anew_as_one_batch(
        harness: Callable[..., Harness], encoded: list[list[int]]) -> None:
    from rankpool.interchange.routing import MOST_SLICES
    h = harness(prefetch=1)
    front = h.front()
    pool = h.pool("p1", node_ranks=(8,))
    front.submit([make_task(i) for i in range(8)])  # fills the pool
    first = pool.tasks()
    singles = list(range(20, 20 + MOST_SLICES + 1))
    for i in singles:  # one batch each, queued: no room
        front.submit([make_task(i)])
    deadline = time.monotonic() + 5
    while h.value("queued") < len(singles) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert h.value("queued") == len(singles)
    pool.answer(first)
    header, frames = pool.recv()
    assert [t.task_id for t in decode_tasks(header, frames[1:])] == singles
    assert encoded == [singles]


def test_cancels_inside_a_queued_batch_leave_the_rest_queued_in_order(
        harness: Callable[..., Harness], encoded: list[list[int]]) -> None:
    """A cancel takes tasks out of the middle of a batch queued as one run: they are answered
    at once, and the tasks around them still leave in order, as slices of the batch."""
    h = harness(prefetch=1)
    front = h.front()
    pool = h.pool("p1", node_ranks=(4,))
    front.submit([make_task(i) for i in range(4)])  # fills the pool
    first = pool.tasks()
    front.submit([make_task(i) for i in range(10, 18)])  # one batch, queued: no room
    deadline = time.monotonic() + 5
    while h.value("queued") < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    front.send(Cancel([12, 13, 16, 99]).encode())  # 99: not known yet
    header, _ = front.message()
    assert isinstance(decode_message(header), Cancelled)
    assert decode_message(header).task_ids == [12, 13, 16] and h.value("queued") == 5
    pool.answer(first)
    got: list[int] = []
    while len(got) < 5:
        header, frames = pool.recv()
        if header["k"] != "tasks":
            continue
        tasks = decode_tasks(header, frames[1:])
        assert [bytes(t.data) for t in tasks] == [b"args%d" % t.task_id for t in tasks]
        got += [t.task_id for t in tasks]
        pool.answer(tasks)
    assert got == [10, 11, 14, 15, 17] and encoded == []
    assert h.value("queued") == 0


def test_submit_socket_sends_tasks_only_and_results_go_to_the_main_socket(
        harness: Callable[..., Harness]) -> None:
    """The front-end's send-only socket (lone tasks) is its identity plus SUBMIT_SUFFIX."""
    h = harness(front_identity="front")
    front = Front(h.ctx, h.client_port, b"front", group=h.peers)
    front.send(Heartbeat().encode())
    submit = Front(h.ctx, h.client_port, ("front" + SUBMIT_SUFFIX).encode(), group=h.peers)
    stranger = Front(h.ctx, h.client_port, b"front/other", group=h.peers)
    pool = h.pool("p1")
    submit.send(Heartbeat().encode())  # not a task: dropped, nothing else changes
    stranger.submit([make_task(1)])  # not the front-end: dropped
    submit.submit([make_task(2)])
    [task] = pool.tasks()
    assert task.task_id == 2
    pool.send(encode_results([make_result(2)]))
    header, frames = front.message()
    assert header["k"] == "results" and result_ids(header, frames[1:]) == [2]
    assert not _drained(submit) and h.ix.front is not None and h.ix.front.identity == b"front"
    assert h.value("outstanding") == 0 and h.value("finished") == 1


def test_tasks_spread_over_pools(harness: Callable[..., Harness]) -> None:
    h = harness()
    front = h.front()
    pools = [h.pool(f"p{i}", block_id=f"b{i}") for i in range(2)]
    front.submit([make_task(i) for i in range(16)])  # 4 ranks each: room for 8 until they run
    tasks = {p.pool_id: p.tasks() for p in pools}
    got = {name: [t.task_id for t in ts] for name, ts in tasks.items()}
    assert sorted(got["p0"] + got["p1"]) == list(range(16))
    assert len(got["p0"]) == len(got["p1"]) == 8
    for p in pools:
        p.answer(tasks[p.pool_id])
    # a lone task goes at once
    front.submit([make_task(100)])
    assert any(_try_tasks(p) for p in pools)


def _try_tasks(pool: FakePool) -> list[Task]:
    try:
        return pool.tasks(0.5)
    except AssertionError:
        return []


def test_capacity_and_batch_limit(harness: Callable[..., Harness]) -> None:
    h = harness(prefetch=1)
    front = h.front()
    pool = h.pool("p1", node_ranks=(2,))
    front.submit([make_task(i) for i in range(5)])
    first = pool.tasks()
    assert [t.task_id for t in first] == [0, 1]  # 2 ranks x prefetch 1
    assert pool.nothing(0.2)
    assert h.value("queued") == 3 and h.value("outstanding") == 5
    pool.answer(first[:1])
    assert [t.task_id for t in pool.tasks()] == [2]
    wide = h.pool("big", block_id="b2", node_ranks=(3000,))
    front.submit([make_task(1000 + i) for i in range(2500)])
    sizes = []
    while sum(sizes) < 2500 - 3:  # two tasks wait for p1, which is full
        sizes.append(len(wide.tasks()))
    assert max(sizes) <= 1024


def test_wide_task_waits_without_blocking(harness: Callable[..., Harness]) -> None:
    h = harness()
    front = h.front()
    narrow = h.pool("narrow", block_id="bn", node_ranks=(2,))
    front.submit([make_task(1, width=4), make_task(2, width=1)])
    assert [t.task_id for t in narrow.tasks()] == [2]
    assert h.value("queued") == 1
    wide = h.pool("wide", block_id="bw", node_ranks=(2, 2), widest=4)
    [task] = wide.tasks()
    assert task.task_id == 1 and task.spec.num_ranks == 4
    assert h.value("queued") == 0


def test_priority_order(harness: Callable[..., Harness]) -> None:
    h = harness(prefetch=1)
    front = h.front()
    pool = h.pool("p1", node_ranks=(1,))
    front.submit([make_task(1)])
    [running] = pool.tasks()
    front.submit([make_task(2, priority=0), make_task(3, priority=5), make_task(4, priority=1),
                  make_task(5, priority=5), make_task(6, priority=-3)])
    wait_for(lambda: h.value("queued") == 5)
    order = []
    for _ in range(5):
        pool.answer([running])
        [running] = pool.tasks()
        order.append(running.task_id)
    assert order == [3, 5, 4, 2, 6]


def test_hold_release_drain(harness: Callable[..., Harness]) -> None:
    h = harness()
    front = h.front()
    pool = h.pool("p1", block_id="b1")
    assert h.value("hold", "b1") == ["p1"]
    front.submit([make_task(1)])
    assert pool.nothing(0.2)
    assert h.value("queued") == 1 and h.value("pools")[0]["held"]
    assert h.value("release", "b1") == ["p1"]
    [task] = pool.tasks()
    assert h.value("idle_blocks") == []
    assert h.command("hold", "nope").error != ""
    assert h.value("drain", "b1") == ["p1"]
    header, _ = pool.recv()
    assert isinstance(decode_message(header), Drain)
    front.submit([make_task(2)])
    info = h.value("pools")[0]
    assert info["draining"] and info["held"] and info["tasks"] == 1
    assert h.command("release", "b1").error != ""
    sent = pool.answer([task])
    assert front.message()[1] == sent
    pool.send(Stop("drained").encode())
    lost = front.lost()
    assert lost.task_ids == [] and lost.block_id == "b1" and "drained" in lost.reason
    assert h.value("pools") == [] and h.value("queued") == 1
    other = h.pool("p2", block_id="b2")
    assert [t.task_id for t in other.tasks()] == [2]


def test_pool_with_stuck_ranks_narrows_and_is_drained(harness: Callable[..., Harness],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Decision 8: a pool reporting stuck ranks no longer counts them as free, is never sent a
    task wider than it can hold, is listed with its stuck ranks, and is drained."""
    h = harness()
    front = h.front()
    pool = h.pool("p1", block_id="b1", node_ranks=(2, 2), widest=4)
    front.submit([make_task(1)])
    [task] = pool.tasks()
    with caplog.at_level(logging.WARNING, logger="rankpool.interchange"):
        pool.send(Capacity([2], [1, 2], 3).encode())
        header, _ = pool.recv()
    assert isinstance(decode_message(header), Drain)
    [info] = h.value("pools")
    assert info["stuck_ranks"] == [2] and info["widest"] == 3 and info["ranks"] == 3
    assert info["node_ranks"] == [1, 2] and info["draining"]
    assert any("degraded" in r.getMessage() and "b1" in r.getMessage() and "[2]" in r.getMessage()
               and "h0,h1" in r.getMessage() for r in caplog.records)
    # a full-width task goes to a whole pool, not to the degraded one
    front.submit([make_task(2, width=4)])
    assert pool.nothing(0.2)
    whole = h.pool("p2", block_id="b2", node_ranks=(2, 2), widest=4)
    assert [t.task_id for t in whole.tasks()] == [2]
    sent = pool.answer([task])
    assert front.message()[1] == sent
    pool.send(Stop("drained").encode())
    lost = front.lost()
    assert lost.task_ids == [] and lost.block_id == "b1"
    assert [p["block_id"] for p in h.value("pools")] == ["b2"]


def test_bad_capacity_reports_are_dropped(harness: Callable[..., Harness]) -> None:
    h = harness()
    pool = h.pool("p1", block_id="b1", node_ranks=(2,))
    for bad in (Capacity([1], [1, 0], 1), Capacity([3], [1], 1), Capacity([1, 1], [0], 0),
                Capacity([], [1], 1), Capacity([1], [1], 2), Capacity([1], [3], 1)):
        pool.send(bad.encode())
    pool.send([encode_header({"k": "capacity", "stuck": "1", "node_ranks": [1], "widest": 1})])
    assert pool.nothing(0.2)
    [info] = h.value("pools")
    assert info["stuck_ranks"] == [] and info["widest"] == 2 and not info["draining"]


def test_capacity_report_moves_the_pool_between_widths() -> None:
    queue, room = TaskQueue(), RoomIndex()
    pool = _pool("p", 4)
    pool.ceiling = 8
    room.add(pool)
    assert check_capacity(pool, Capacity([1, 3], [2], 2)) == ""
    pool.reshape(Capacity([1, 3], [2], 2), prefetch=2)
    room.reshape(pool, 4)
    assert pool.idle == 2 and pool.widest == 2 and pool.capacity <= 4
    push(queue, make_task(1, width=3))
    push(queue, make_task(2, width=2))
    assert _ids(match(queue, room)) == {"p": [2]} and len(queue) == 1
    # back from being stuck: the whole width again
    pool.finish_many([2])
    pool.reshape(Capacity([], [4], 4), prefetch=2)
    room.reshape(pool, 2)
    assert _ids(match(queue, room)) == {"p": [1]}


def test_pools_outstanding_idle_and_unknown_commands(harness: Callable[..., Harness]) -> None:
    h = harness()
    front = h.front()
    pools = [h.pool(f"p{i}", block_id=f"b{i}", node_ranks=(2,)) for i in (1, 2)]
    front.submit([make_task(1, width=2)])
    busy = wait_for(lambda: [p for p in h.value("pools") if p["tasks"]])
    assert busy[0]["busy_ranks"] == 2 and busy[0]["last_seen_s"] >= 0
    assert h.value("outstanding") == 1 and h.value("queued") == 0
    idle = h.value("idle_blocks")
    assert idle == ["b2"] if busy[0]["block_id"] == "b1" else idle == ["b1"]
    assert "unknown command" in h.command("frobnicate").error
    assert len(pools) == 2
    # blocks that had a pool registered stay listed after the pool leaves (they did start)
    assert h.value("registered_blocks") == ["b1", "b2"]
    pools[1].send(Stop("done").encode())
    wait_for(lambda: len(h.value("pools")) == 1)
    assert h.value("registered_blocks") == ["b1", "b2"]


def test_silent_pool_is_lost(harness: Callable[..., Harness]) -> None:
    h = harness(**FAST)
    front = h.front()
    front.beat_every = 0.05
    pool = h.pool("p1", block_id="b1")
    front.submit([make_task(1), make_task(2)])
    assert sorted(t.task_id for t in pool.tasks()) == [1, 2]
    start = time.monotonic()
    lost = front.lost(timeout=3.0)
    assert time.monotonic() - start < 1.5
    assert lost.block_id == "b1" and sorted(lost.task_ids) == [1, 2]
    assert "no heartbeat" in lost.reason
    header, _ = pool.recv(skip_beats=True)
    assert isinstance(decode_message(header), Stop)
    # what it sends later is ignored; the interchange goes on
    pool.send(encode_results([make_result(1)]))
    assert h.value("outstanding") == 0 and h.value("pools") == []


def test_pool_whose_connection_closes_is_lost_before_the_threshold(
        harness: Callable[..., Harness]) -> None:
    """A pool process that dies closes its connection: the next heartbeat finds no route to it,
    so its tasks fail within a period instead of after the whole threshold."""
    h = harness(heartbeat_period=0.1, heartbeat_threshold=60.0)
    front = h.front()
    front.beat_every = 0.05
    pool = h.pool("p1", block_id="b1")
    front.submit([make_task(1), make_task(2)])
    assert sorted(t.task_id for t in pool.tasks()) == [1, 2]
    pool.sock.close(linger=0)
    lost = front.lost(timeout=10.0)  # far less than the 60 s threshold
    assert lost.block_id == "b1" and sorted(lost.task_ids) == [1, 2]
    assert "connection closed" in lost.reason
    assert h.value("outstanding") == 0 and h.value("pools") == [] and h.value("finished") == 2


def test_heartbeating_pool_survives_and_is_pinged(harness: Callable[..., Harness]) -> None:
    h = harness(**FAST)
    front = h.front()
    front.beat_every = 0.05
    pool = h.pool("p1")
    pool.beat_every = 0.05
    header, _ = pool.recv(timeout=1.0, skip_beats=False)
    assert header["k"] == "heartbeat"
    assert front.nothing(1.0)
    assert len(h.value("pools")) == 1


def test_only_pools_sent_nothing_for_a_period_are_pinged(harness: Callable[..., Harness]) -> None:
    """Tasks tell a pool that the interchange is alive: a pool sent tasks all along gets no
    heartbeat, an idle one gets one per period."""
    h = harness(**FAST)
    front = h.front()
    front.beat_every = 0.05
    busy, idle = h.pool("busy", block_id="b1"), h.pool("idle", block_id="b2")
    busy.beat_every = idle.beat_every = 0.05
    assert h.value("hold", "b2") == ["idle"]
    beats = {"busy": 0, "idle": 0}
    end = time.monotonic() + 0.8
    task_id = 0
    while time.monotonic() < end:
        task_id += 1
        front.submit([make_task(task_id)])
        while True:  # the task, after whatever heartbeat came first
            header, frames = busy.recv(timeout=2.0, skip_beats=False)
            if header["k"] != "heartbeat":
                break
            beats["busy"] += 1
        busy.answer(decode_tasks(header, frames[1:]))
        front.message()
        while idle.sock.poll(0):
            header, _ = idle.recv(skip_beats=False)
            beats["idle"] += header["k"] == "heartbeat"
        time.sleep(0.03)
    assert task_id > 10 and beats["busy"] == 0 and beats["idle"] >= 4, (task_id, beats)


def test_idle_pools_are_beaten_less_often_when_there_are_many(
        harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``BEATS_PER_S`` pools per period the interchange beats each idle pool less often
    (here 2 pools at 5 beats a second: every third of the threshold, not every period), and
    the pools it lost sight of are still lost at the threshold."""
    monkeypatch.setattr(pools_module, "BEATS_PER_S", 5)
    h = harness(**FAST)  # period 0.1 s, threshold 0.5 s: beaten every 0.167 s
    front = h.front()
    front.beat_every = 0.05
    quiet = h.pool("quiet", block_id="b1")
    h.pool("silent", block_id="b2")
    quiet.beat_every = 0.05
    beats, start = [], time.monotonic()
    while time.monotonic() - start < 1.2:
        try:
            header, _ = quiet.recv(timeout=0.3, skip_beats=False)
        except AssertionError:
            continue
        if header["k"] == "heartbeat":
            beats.append(time.monotonic())
    gaps = [b - a for a, b in zip(beats, beats[1:])]
    assert 4 <= len(beats) <= 8 and min(gaps) > 0.12, gaps  # every period: 12, 0.1 s apart
    lost = front.lost(timeout=1.0)  # the pool that never beat, after the 0.5 s threshold
    assert lost.block_id == "b2" and "no heartbeat" in lost.reason
    assert [p["pool_id"] for p in h.value("pools")] == ["quiet"]


def test_beat_interval_grows_with_the_pools_up_to_a_third_of_the_threshold() -> None:
    assert beat_interval(1, 2.0, 10.0) == 2.0
    assert beat_interval(BEATS_PER_S * 2, 2.0, 10.0) == 2.0  # the period, up to its budget
    assert beat_interval(BEATS_PER_S * 3, 2.0, 10.0) == 3.0
    assert beat_interval(BEATS_PER_S * 100, 2.0, 10.0) == pytest.approx(10.0 / 3)
    assert beat_interval(BEATS_PER_S * 100, 2.0, 4.0) == 2.0  # never under the period


def test_pool_stop_and_reregistration_lose_tasks(harness: Callable[..., Harness]) -> None:
    h = harness()
    front = h.front()
    pool = h.pool("p1", block_id="b1")
    front.submit([make_task(1)])
    pool.tasks()
    pool.send(Stop("rank 3 died").encode())
    lost = front.lost()
    assert lost.task_ids == [1] and "rank 3 died" in lost.reason
    pool.register(block_id="b1")
    front.submit([make_task(2)])
    pool.tasks()
    pool.register(block_id="b1")  # a restart under the same id
    assert front.lost().task_ids == [2]
    assert len(h.value("pools")) == 1


def test_unknown_results_are_dropped(harness: Callable[..., Harness]) -> None:
    h = harness()
    front = h.front()
    pool = h.pool("p1")
    pool.send(encode_results([make_result(42)]))
    assert front.nothing(0.2)
    front.submit([make_task(1)])
    pool.tasks()
    pool.send(encode_results([make_result(1), make_result(43)]))
    header, frames = front.message()
    assert result_ids(header, frames[1:]) == [1]
    assert h.value("outstanding") == 0


GARBAGE: list[list[bytes]] = [
    [os.urandom(64)],
    [b"{not json"],
    [b"[1, 2, 3]"],
    [encode_header({"no": "kind"})],
    [encode_header({"k": "frobnicate"})],
    [encode_header({"k": "heartbeat"}), b"extra frame"],
    [encode_header({"k": "stop", "reason": 5})],
    [encode_header({"k": "command", "name": 1, "arg": None})],
    [encode_header({"k": "register", "protocol": "1"})],
    raw_tasks([[99, 0, 0, 1, 0]], data=b"b", fn_table=[["zz", 1]]),  # bad digest
    raw_tasks([[98, 0, 0, 50, 0]], data=b"short"),  # truncated
    raw_tasks([[97, 0, 0, 1, 2]], data=b"b", extra=[b"x"]),  # missing frame
    raw_tasks([[96, 0, 0, 1, 0]], data=b"b", specs=[[0, 0, 0, 0, 0, 0]]),
    raw_tasks([[95, 3, 0, 1, 0]], data=b"b"),  # no such function
    raw_tasks([[94, 0, 0, 1, 0]], data=b"b", n=5),  # records past the blob
    [encode_header({"k": "tasks", "n": "nope"})],
    [encode_header({"k": "tasks", "n": 0})],
    raw_results([[1, 0, 1, 10**6, 0]], b"x"),
    raw_results([[1, 0, 9, 1, 0]], b"x"),
    [encode_header({"k": "results", "n": 1}), b""],
    [encode_header({"k": "results"})],
    [encode_header({"k": "results", "n": 0})],
    raw_results([[1, 0, 1, 1, 5]], b"x"),
]


def _drained(peer: Peer) -> bool:
    """Take one pending message off the peer; False when none comes within 0.3 s."""
    try:
        header, _ = peer.recv(0.3)
    except AssertionError:
        return False
    assert header["k"] == "reply" and header["error"]
    return True


def test_garbage_does_not_stop_it(harness: Callable[..., Harness],
                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="rankpool")
    h = harness()
    front = h.front()
    pool = h.pool("p1")
    stranger = FakePool(h.ctx, h.pool_port, "stranger")
    for frames in GARBAGE:
        front.send(frames)
        pool.send(frames)
        stranger.send(frames)
        h.commander.send(frames)
    replies = 0
    while _drained(h.commander):  # headers with a kind get an error reply, the rest nothing
        replies += 1
    assert replies == sum(1 for f in GARBAGE if b'"k"' in f[0])
    # refused batches whose ids can be read come back as Lost, so no future hangs
    refused: set[int] = set()
    while True:
        try:
            header, _ = front.recv(0.3)
        except AssertionError:
            break
        msg = decode_message(header)
        assert isinstance(msg, Lost) and "malformed" in msg.reason
        refused.update(msg.task_ids)
    assert refused <= {95, 96, 97, 98, 99} and {95, 97, 98, 99} <= refused
    assert h.thread.is_alive()
    front.submit([make_task(5)])
    [task] = pool.tasks()
    sent = pool.answer([task])
    assert front.message()[1] == sent
    assert h.value("outstanding") == 0
    # every piece of garbage was refused as such (a warning), none tripped over a bug (an error)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("dropped a message on the" in r.getMessage() for r in caplog.records)


def test_stop_command_ends_run(harness: Callable[..., Harness]) -> None:
    h = harness()
    pools = [h.pool(f"p{i}", block_id=f"b{i}") for i in range(2)]
    assert h.value("stop") is True
    assert h.join(5)
    for pool in pools:
        header, _ = pool.recv()
        assert isinstance(decode_message(header), Stop)


def test_front_end_silence_ends_run(harness: Callable[..., Harness]) -> None:
    h = harness(**FAST)
    h.front()  # says hello once, then nothing (the harness keeps the socket open)
    pool = h.pool("p1")
    pool.beat_every = 0.05
    assert h.join(3)
    header, _ = pool.recv()
    msg = decode_message(header)
    assert isinstance(msg, Stop) and "front-end" in msg.reason


def test_front_end_stop_message_ends_run(harness: Callable[..., Harness]) -> None:
    h = harness()
    front = h.front()
    pool = h.pool("p1")
    front.send(Stop("shutdown").encode())
    assert h.join(5)
    assert isinstance(decode_message(pool.recv()[0]), Stop)


def test_parent_gone_ends_run(harness: Callable[..., Harness]) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(10)
    h = harness(parent_pid=child.pid, **FAST)
    assert h.join(3)


def test_process_entry_point(tmp_path: Path) -> None:
    cfg = InterchangeConfig(run_dir=str(tmp_path), log_level="DEBUG")
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "rankpool.interchange"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(cfg.to_json() + "\n")
        proc.stdin.flush()
        ports = json.loads(proc.stdout.readline())
        assert set(ports) == {"pool_port", "client_port", "command_port"}
        ctx = zmq.Context()
        try:
            pool = FakePool(ctx, ports["pool_port"], "p1")
            pool.register()
            cmd = Peer(ctx, ports["command_port"])
            cmd.send(Command("stop", "").encode())
            assert decode_message(cmd.recv()[0]) == Reply("stop", True, "")
            assert isinstance(decode_message(pool.recv()[0]), Stop)
        finally:
            ctx.destroy(linger=0)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    log_text = (tmp_path / "interchange.log").read_text()
    assert "registered pool 'p1'" in log_text


def test_help_and_bad_config() -> None:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    out = subprocess.run([sys.executable, "-m", "rankpool.interchange", "--help"], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "stdin" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "rankpool.interchange"], env=env,
                         input='{"prefetch": 0}', capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "prefetch" in bad.stderr


def test_config_replace_keeps_validation() -> None:
    with pytest.raises(ValueError, match="prefetch"):
        replace(InterchangeConfig(), prefetch=-1)


# ---------------------------------------------------------------------------------------------
# matching on its own (no sockets)
def _pool(name: str, ranks: int, prefetch: int = 1, widest: int | None = None) -> Pool:
    widest = ranks if widest is None else widest
    return Pool(identity=name.encode(), block_id=name, pool_id=name, hosts=["h"],
                node_ranks=[ranks], widest=widest, capacity=max(ranks * prefetch, widest),
                rankpool=__version__, python=PYTHON_VERSION, last_seen=0.0)


def _ids(batches: list[tuple[Pool, list[Any]]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for pool, entries in batches:
        out.setdefault(pool.pool_id, []).extend(i for _, run in entries for i in run.ids)
    return out


def test_wide_task_reserves_full_pools() -> None:
    queue, room = TaskQueue(), RoomIndex()
    big, small = _pool("big", 4), _pool("small", 1)
    for p in (big, small):
        room.add(p)
    for i in range(3):
        push(queue, make_task(i))
    assert sum(len(e) for _, e in match(queue, room)) == 3  # big holds 2 or 3 of them
    push(queue, make_task(10, width=4))
    for i in range(11, 15):
        push(queue, make_task(i))
    big.finish_many(list(big.in_flight)[:1])
    small.finish_many(list(small.in_flight))
    room.offer(big)
    room.offer(small)
    # the wide task cannot fit yet: big is reserved for it, narrow tasks may still use small
    got = _ids(match(queue, room))
    assert "big" not in got and got.get("small") == [11]
    big.finish_many(list(big.in_flight))
    room.offer(big)
    assert _ids(match(queue, room)) == {"big": [10]}


def test_held_pool_does_not_reserve() -> None:
    queue, room = TaskQueue(), RoomIndex()
    wide, narrow = _pool("wide", 4), _pool("narrow", 2)
    wide.held = True
    room.add(wide)
    room.add(narrow)
    push(queue, make_task(1, width=4))
    push(queue, make_task(2))
    assert _ids(match(queue, room)) == {"narrow": [2]}
    assert len(queue) == 1


def test_matching_does_not_scan_pools() -> None:
    """Ten thousand pools: matching a flood costs per task, not per task times pools."""
    queue, room = TaskQueue(), RoomIndex()
    pools = [_pool(f"p{i}", 2, widest=1 + i % 2) for i in range(10_000)]
    for p in pools:
        room.add(p)
    for i in range(20_000):
        push(queue, make_task(i, width=1 + i % 2))
    start = time.perf_counter()
    placed = sum(len(e) for _, e in match(queue, room))
    elapsed = time.perf_counter() - start
    assert placed == 15_000  # narrow pools hold 2 narrow tasks; wide ones 2 narrow or 1 wide
    assert elapsed < 2.0, f"matching 20,000 tasks over 10,000 pools took {elapsed:.2f} s"
    table = PoolTable()
    for i, p in enumerate(pools):
        p.last_seen = float(i)
        table.add(p)
    assert [p.pool_id for p in table.silent_since(3.0)] == ["p0", "p1", "p2"]


def test_pools_due_a_heartbeat_are_those_sent_nothing_longest() -> None:
    table = PoolTable()
    pools = [_pool(f"p{i}", 1) for i in range(5)]
    for i, p in enumerate(pools):
        p.last_sent = float(i)
        table.add(p)
    table.sent(pools[0], 10.0)  # sent tasks: now last in line
    assert [p.pool_id for p in table.unsent_since(3.0, 10)] == ["p1", "p2"]
    assert [p.pool_id for p in table.unsent_since(9.0, 2)] == ["p1", "p2"]  # one slice
    table.remove(pools[1])
    assert [p.pool_id for p in table.unsent_since(11.0, 10)] == ["p2", "p3", "p4", "p0"]


# ---------------------------------------------------------------------------------------------
# throughput: a measurement, not an assertion (RANKPOOL_SLOW=1 pytest -s -k throughput)
_ECHO_POOLS = r'''
import sys, zmq
from rankpool._version import __version__
from rankpool.protocol.messages import (PROTOCOL_VERSION, PYTHON_VERSION, Register, decode_header,
                               encode_header, task_ids)
from rankpool.protocol.wire import pack_ints
port, npools, ranks = map(int, sys.argv[1:4])
ctx, poller = zmq.Context(), zmq.Poller()
for i in range(npools):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.IDENTITY, f"p{i}".encode())
    s.connect(f"tcp://127.0.0.1:{port}")
    s.send_multipart(Register(PROTOCOL_VERSION, __version__, PYTHON_VERSION, f"b{i}", f"p{i}",
                              ["h"], [ranks], ranks, ranks).encode())
    poller.register(s, zmq.POLLIN)
while True:
    for s, _ in poller.poll(1000):
        frames = s.recv_multipart()
        header = decode_header(frames[0])
        if header["k"] == "tasks":
            ids = task_ids(header, frames[1:])
            rows = [v for i in ids for v in (i, 0, 1, 1, 0)]
            s.send_multipart([encode_header({"k": "results", "n": len(ids)}),
                              pack_ints(rows) + b"x" * len(ids)])
        elif header["k"] == "stop":
            sys.exit(0)
'''


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("RANKPOOL_SLOW") != "1", reason="set RANKPOOL_SLOW=1 to measure")
def test_throughput(capsys: pytest.CaptureFixture[str]) -> None:
    """100,000 no-op tasks through an interchange process to 4 fake pools that answer at once."""
    n, npools, ranks, batch, window = 100_000, 4, 8, 1024, 20_000
    env = dict(os.environ, PYTHONPATH=str(SRC))
    ix = subprocess.Popen([sys.executable, "-m", "rankpool.interchange"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, env=env)
    ctx = zmq.Context()
    pools = None
    try:
        assert ix.stdin is not None and ix.stdout is not None
        ix.stdin.write(InterchangeConfig(log_level="WARNING").to_json() + "\n")
        ix.stdin.flush()
        ports = json.loads(ix.stdout.readline())
        pools = subprocess.Popen([sys.executable, "-c", _ECHO_POOLS, str(ports["pool_port"]),
                                  str(npools), str(ranks)], env=env)
        front = Front(ctx, ports["client_port"])
        cmd = Peer(ctx, ports["command_port"])

        def registered() -> bool:
            cmd.send(Command("pools", "").encode())
            return len(decode_message(cmd.recv()[0]).value) == npools  # type: ignore[attr-defined]

        wait_for(registered, timeout=30, interval=0.05)
        start = time.perf_counter()
        sent = done = 0
        while done < n:
            while sent < n and sent - done < window:
                k = min(batch, n - sent)
                front.submit([Task(sent + i, DEFAULT_SPEC, b"\x01", b"f", b"d") for i in range(k)])
                sent += k
            header, frames = front.recv(30)
            if header["k"] == "results":
                done += len(result_ids(header, frames[1:]))
        elapsed = time.perf_counter() - start
        with capsys.disabled():
            print(f"\ninterchange: {n} no-op tasks, {npools} pools x {ranks} ranks: "
                  f"{elapsed:.2f} s, {n / elapsed:,.0f} tasks/s")
        cmd.send(Command("stop", "").encode())
        assert ix.wait(10) == 0
    finally:
        ctx.destroy(linger=0)
        for proc in (ix, pools):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_refusals_and_losses_say_their_cause(harness: Callable[..., Harness]) -> None:
    h = harness()
    front = h.front()
    FakePool(h.ctx, h.pool_port, "old").register(block_id="b9", rankpool="0.0.1", expect_ok=False)
    header, _ = front.recv()
    refused = decode_message(header)
    assert isinstance(refused, Refused) and refused.cause is RefusalCause.VERSION_MISMATCH
    assert front.lost().cause is LostCause.REFUSED
    pool = h.pool("p1", block_id="b1")
    front.submit([make_task(1)])
    assert [t.task_id for t in pool.tasks()] == [1]
    pool.send(Stop("leaving").encode())  # it stops by itself, holding task 1
    lost = front.lost()
    assert (lost.block_id, lost.task_ids, lost.cause) == ("b1", [1], LostCause.STOPPED)
