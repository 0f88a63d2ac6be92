"""The message handlers under fuzz, run in-process on fake sockets.

Three targets, each fed one :class:`~fuzz_messages.Case` at a time (see :mod:`fuzz_checks`
for what counts as a failure):

* :class:`InterchangeTarget`: a real :class:`~rankpool.interchange.Interchange` whose three
  ROUTER sockets are :class:`FakeSocket` objects. A case goes through the loop's own
  ``_drain`` step, then the loop's periodic steps run (dispatch, liveness, heartbeat). It starts
  with a front-end, two registered pools and tasks in flight, so results have somewhere to go.
* :class:`PoolTarget`: a :class:`~rankpool.mpi_pool.pool.RankZero` built without MPI (a
  fake manager, a fake DEALER); a case goes through its ``pool_receive`` step.
* :class:`ClientTarget`: the front-end's :class:`~rankpool.frontends.client.InterchangeClient`
  receive step, with recording callbacks.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import zmq
from fuzz_checks import Finding, Hang, Report, deadline, known_bug, receivable
from fuzz_messages import Case, Mutator, as_bytes, corpus, register, task

from rankpool.frontends.client import InterchangeClient
from rankpool.interchange import Interchange, InterchangeConfig
from rankpool.interchange.client_link import ClientLink
from rankpool.mpi_pool.config import PoolConfig
from rankpool.protocol.batches import Task, encode_tasks
from rankpool.protocol.messages import Lost, Refused
from rankpool.protocol.result_batches import Result, Values
from rankpool.protocol.wire import decode_header
from rankpool.task.resources import Spec


class FakeFrame(zmq.Frame):
    """A received frame that says whether more of its message follow, as libzmq's do."""

    more = False


class FakeSocket:
    """A ZeroMQ socket's receive queue and send side; sends fail now and then when asked.

    Messages are taken whole (``recv_multipart``) or frame by frame (``recv``, ``send`` with
    ``SNDMORE``), as ``rankpool.sockets.recv_frames`` and ``send_routed`` do."""

    def __init__(self, rng: random.Random | None = None, fail: float = 0.0) -> None:
        self.inbox: deque[list[bytes]] = deque()
        self.sent: list[list[bytes]] = []
        self.rng, self.fail = rng, fail
        self._reading: deque[bytes] = deque()  # the rest of a message being read by frames
        self._sending: list[Any] | None = None  # the frames of a message being sent

    def recv(self, flags: int = 0, copy: bool = True) -> Any:
        if not self._reading:
            if not self.inbox:
                raise zmq.Again()
            self._reading.extend(self.inbox.popleft())
        frame = FakeFrame(self._reading.popleft())
        frame.more = bool(self._reading)
        return frame if not copy else frame.bytes

    def send(self, data: Any, flags: int = 0, copy: bool = True) -> None:
        if self._sending is None:
            self._sending = []
        self._sending.append(data)
        if not flags & zmq.SNDMORE:
            frames, self._sending = self._sending, None
            self.send_multipart(frames)

    def recv_multipart(self, flags: int = 0, copy: bool = True) -> list[Any]:
        if not self.inbox:
            raise zmq.Again()
        frames = self.inbox.popleft()
        return frames if copy else [zmq.Frame(f) for f in frames]

    def send_multipart(self, frames: list[Any], flags: int = 0, copy: bool = True) -> None:
        if self.rng is not None and self.rng.random() < self.fail:
            raise zmq.ZMQError(zmq.EHOSTUNREACH)
        self.sent.append([f.bytes if isinstance(f, zmq.Frame) else bytes(f) for f in frames])

    def poll(self, timeout: int | None = None, flags: int = zmq.POLLIN) -> int:
        return zmq.POLLIN if self.inbox else 0

    def getsockopt(self, option: int) -> int:
        assert option == zmq.EVENTS, f"FakeSocket knows only EVENTS, not option {option}"
        return self.poll()


class InterchangeTarget:
    """An interchange on fake sockets, rebuilt every ``reset_every`` cases or when it stops."""

    POOLS = (("p0", "b0", (4,)), ("p1", "b1", (2, 2)))

    def __init__(self, seed: int, reset_every: int = 300) -> None:
        self.rng = random.Random(seed)
        self.mutator = Mutator(seed)
        self.reset_every = reset_every
        self.fed = 0
        self.reset()

    def reset(self) -> None:
        ix = self.ix = Interchange(InterchangeConfig(front_identity="front",
                                                     heartbeat_period=1e4,
                                                     heartbeat_threshold=1e5))
        ix._pool_sock = self.pool_sock = FakeSocket(self.rng, 0.0)  # type: ignore[assignment]
        ix._client_sock = self.client_sock = FakeSocket()  # type: ignore[assignment]
        ix._command_sock = self.command_sock = FakeSocket()  # type: ignore[assignment]
        ix.front = ClientLink(self.client_sock, ix._throttle)  # type: ignore[arg-type]
        ix.ports = (1, 2, 3)
        self.steps = {"pool": ("pool", self.pool_sock, ix.on_pool_message),
                      "client": ("front-end", self.client_sock, ix.on_client_message),
                      "command": ("command", self.command_sock, ix.on_command_message)}
        self.deliver("client", b"front", [b'{"k":"heartbeat"}'])
        for pool_id, block_id, ranks in self.POOLS:
            self.deliver("pool", pool_id.encode(), register(pool_id, block_id, ranks))
        self.deliver("client", b"front", as_bytes(encode_tasks([task(i) for i in range(1, 21)])))
        ix.dispatch()
        in_flight = sorted(i for p in ix.pools for i in p.in_flight)
        self.corpus = corpus(in_flight)
        self.others = [f for msgs in self.corpus.values() for f in msgs]
        for sock in (self.pool_sock, self.client_sock, self.command_sock):
            sock.sent.clear()
        self.pool_sock.fail = 0.02  # now and then a pool has gone: dispatch must cope

    def deliver(self, channel: str, identity: bytes, frames: list[bytes]) -> None:
        name, sock, handler = self.steps[channel]
        sock.inbox.append([identity, *frames])
        self.ix._now = time.monotonic()
        self.ix._drain(name, sock, handler)  # type: ignore[arg-type]

    def case(self) -> Case:
        rng = self.rng
        channel = rng.choices(("pool", "client", "command"), (45, 35, 20))[0]
        frames, how = self.mutator.case(self.corpus[channel], self.others)
        roll = rng.random()
        if channel == "pool":
            ids = [p.identity for p in self.ix.pools] or [b"p0"]
            identity = rng.choice(ids) if roll < 0.8 else b"front" if roll < 0.85 \
                else rng.randbytes(rng.randint(1, 12))
        elif channel == "client":
            identity = b"front" if roll < 0.9 else rng.randbytes(rng.randint(1, 12))
        else:
            identity = rng.randbytes(5)
        return Case(channel, identity, frames, how)

    def feed(self, case: Case, report: Report) -> None:
        """Deliver one case, run the loop's periodic steps, and check what came of it."""
        ix = self.ix
        report.cases[f"interchange/{case.channel}"] += 1
        try:
            with deadline():
                self.deliver(case.channel, case.identity, case.frames)
                ix.after_messages()
                if self.fed % 10 == 0:
                    ix.heartbeat()
        except Exception as exc:
            kind = "hang" if isinstance(exc, Hang) else "exception escaped the loop"
            report.add(Finding("interchange", kind, repr(exc)[:300], case, known_bug(exc)))
        self.check(case, report)
        self.fed += 1
        if ix._done or self.fed % self.reset_every == 0:
            report.outcomes["interchange stopped" if ix._done else "interchange reset"] += 1
            self.reset()

    def check(self, case: Case, report: Report) -> None:
        """Bookkeeping adds up, and everything sent out would be received."""
        ix = self.ix
        try:
            queued_ids = [i for level in ix.queue._levels.values()
                          for dq in level.values() for _, run in dq for i in run.ids]
            queued, count = set(queued_ids), len(queued_ids)
            assert len(queued) == count, "a task queued twice"
            flying: set[int] = set()
            for pool in ix.pools:
                assert pool.used == sum(pool.in_flight.values()) >= 0, \
                    f"pool {pool.pool_id!r}: used {pool.used} != in flight {pool.in_flight}"
                assert not flying & set(pool.in_flight), "a task in flight on two pools"
                flying |= set(pool.in_flight)
            assert count == len(ix.queue), f"queue length {len(ix.queue)} != {count} tasks queued"
            assert ix.known == queued | flying, \
                f"known - (queued | in flight) = {sorted(ix.known - queued - flying)[:5]}, " \
                f"(queued | in flight) - known = {sorted((queued | flying) - ix.known)[:5]}"
        except AssertionError as exc:
            report.add(Finding("interchange", "bookkeeping", str(exc), case))
        for sock, to in ((self.client_sock, "front-end"), (self.pool_sock, "pool")):
            for out in sock.sent:
                why = receivable(out[1:])
                if why:
                    as_is = out[1:] == case.frames
                    report.add(Finding(
                        "interchange", f"sent the {to} a message it drops", why, case,
                        "forwarded-bad-results" if as_is and to == "front-end" else ""))
            report.outcomes[f"messages to the {to}"] += len(sock.sent)
            sock.sent.clear()
        self.command_sock.sent.clear()


# -- the pool's manager ----------------------------------------------------------------------------
class FakeManager:
    """Takes tasks as the MPI manager would, checking that each is well-formed."""

    def __init__(self) -> None:
        self.outstanding = 0
        self.undispatched = False

    def submit_many(self, tasks: list[Task]) -> None:
        for t in tasks:
            assert type(t.task_id) is int and isinstance(t.spec, Spec) and t.spec.num_ranks >= 1
            assert isinstance(t.fn_digest, bytes) and isinstance(t.fn, bytes)
            assert isinstance(t.data, bytes) and all(len(memoryview(b)) >= 0 for b in t.buffers)
        self.outstanding += len(tasks)
        self.undispatched = self.undispatched or bool(tasks)

    def manager_cancel(self, task_ids: Sequence[int]) -> None:
        assert all(type(i) is int for i in task_ids)

    def manager_dispatch(self) -> bool:
        """Rank 0 dispatches after each task batch; the fuzz target checks that it did."""
        self.undispatched = False
        return False


class PoolTarget:
    """Rank 0's ``pool_receive`` step on a fake DEALER, without MPI."""

    def __init__(self, seed: int) -> None:
        from rankpool.mpi_pool.pool import (
            RankZero,  # mpi4py: imported only when fuzzed
        )
        self.rng = random.Random(seed)
        self.mutator = Mutator(seed)
        pm = self.pm = object.__new__(RankZero)
        pm.cfg = PoolConfig(interchange="tcp://127.0.0.1:1", block_id="b0")
        pm.mpi = FakeManager()  # type: ignore[assignment]
        pm.draining = False
        pm.retiring = ""
        pm.watch = None  # no keepers to watch
        pm.sock = self.sock = FakeSocket()  # type: ignore[assignment]
        pm.period, pm.threshold = 2.0, 10.0
        pm.last_heard = pm.last_sent = time.monotonic()
        pm.first_done = 0.0
        self.corpus = corpus([1, 2, 3])
        self.others = [f for msgs in self.corpus.values() for f in msgs]

    def case(self) -> Case:
        frames, how = self.mutator.case(self.corpus["to_pool"], self.others)
        return Case("to_pool", b"", frames, how)

    def feed(self, case: Case, report: Report) -> None:
        from rankpool.mpi_pool.leaving import PoolLeaves
        report.cases["pool/to_pool"] += 1
        self.sock.inbox.append(case.frames)
        try:
            with deadline():
                self.pm.pool_receive(0)
        except PoolLeaves:
            report.outcomes["pool told to stop"] += 1
            try:
                assert decode_header(case.frames[0])["k"] == "stop"
            except Exception:
                report.add(Finding("pool", "left without a Stop", "", case))
        except Exception as exc:
            kind = "hang" if isinstance(exc, Hang) else "exception escaped pool_receive"
            report.add(Finding("pool", kind, repr(exc)[:300], case, known_bug(exc)))
        else:
            if self.pm.mpi.undispatched:
                report.add(Finding("pool", "tasks taken but not dispatched", "", case))
        finally:
            self.pm.mpi.undispatched = False
            self.sock.inbox.clear()
            self.pm.draining = False


# -- the front-end's client ------------------------------------------------------------------------
class ClientTarget:
    """The front-end's receive step (an escaping exception would break the executor)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.mutator = Mutator(seed)
        c = self.client = object.__new__(InterchangeClient)
        c.sock = self.sock = FakeSocket()  # type: ignore[assignment]
        c.last_heard = 0.0
        c.on_results = self._results  # type: ignore[method-assign]
        c.on_lost = lambda msg: self._expect(msg, Lost)  # type: ignore[method-assign]
        c.on_refused = lambda msg: self._expect(msg, Refused)  # type: ignore[method-assign]
        c.on_started = lambda ids: self._expect_ids(ids)
        c.on_cancelled = lambda ids: self._expect_ids(ids)
        self.corpus = corpus([1, 2, 3])
        self.others = [f for msgs in self.corpus.values() for f in msgs]

    @staticmethod
    def _results(values: Values, results: list[Result]) -> None:
        ids, datas = values
        assert len(ids) == len(datas), "a value for each id"
        assert not (ids and results), "a batch comes as values or as results, not both"
        assert all(type(t) is int for t in ids) and all(isinstance(d, memoryview) for d in datas)
        assert all(isinstance(r, Result) and type(r.task_id) is int and r.outcomes for r in results)

    @staticmethod
    def _expect(msg: Any, cls: type) -> None:
        assert isinstance(msg, cls)

    @staticmethod
    def _expect_ids(task_ids: Any) -> None:
        assert isinstance(task_ids, list) and all(type(t) is int for t in task_ids)

    def case(self) -> Case:
        frames, how = self.mutator.case(self.corpus["to_front"], self.others)
        return Case("to_front", b"", frames, how)

    def feed(self, case: Case, report: Report) -> None:
        report.cases["client/to_front"] += 1
        self.sock.inbox.append(case.frames)
        try:
            with deadline():
                self.client._receive()
        except Exception as exc:
            kind = "hang" if isinstance(exc, Hang) else "exception escaped the client's receive"
            report.add(Finding("client", kind, repr(exc)[:300], case, known_bug(exc)))
        finally:
            self.sock.inbox.clear()


#: records the client logs at ERROR on purpose (a refused pool is the user's business)
CLIENT_ERRORS = ("the interchange refused pool",)
