"""Rank 0 of a pool: its one connection to the interchange, around the worker ranks it holds
over MPI (how every rank starts and ends: :mod:`.program`; how rank 0 connects and registers:
:mod:`.joining`).

Rank 0's loop is a short list of non-blocking steps::

    pool_receive     ZeroMQ: tasks (each batch dispatched to the ranks as it is taken),
                     heartbeats, drain, stop from the interchange
    manager.progress MPI: dispatch to worker ranks, gather their outcomes
    pool_report      ZeroMQ: finished results, in one batch per loop turn, and the tasks that
                     started (still running ``START_DELAY`` after they started), in another
    pool_deaths      worker ranks that died (see :mod:`.deaths`): their tasks fail or run
                     elsewhere; past ``max_lost`` the pool retires (finishes what started)
    pool_capacity    ZeroMQ: when ranks got stuck (or came back) or died, what the pool can
                     still hold
    pool_heartbeat   send ours (an answer to the interchange's, or after a third of the
                     threshold without one); leave when the interchange has been silent too long

While nothing is outstanding rank 0 blocks in the ZeroMQ poll (no CPU, instant wake); while
tasks are out it polls ZeroMQ without blocking and backs off over MPI, sleeping on its
doorbell and its ZeroMQ socket, so that a worker rank of its node that reports, or a message
from the interchange, ends the sleep at once (see :mod:`.doorbell`). Where rank 0 sits on the
data path: ``docs/internals.md``.
"""

from __future__ import annotations

import logging
import secrets
import signal
import time
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import zmq
from mpi4py import MPI

from ..errors import ProtocolError
from ..exit_codes import ExitCode
from ..protocol import batches, result_batches, wire
from ..protocol import messages as protocol
from ..sockets import readable, recv_frames, send_frames
from ..task.node_resources import device_ranks
from .backoff import Backoff, tighten_timer_slack
from .config import PoolConfig
from .deaths import DeathWatch
from .doorbell import RING_GRACE, Doorbell
from .joining import connect, register, report_unreachable
from .leaving import PoolLeaves, PoolRefused, PoolUnreachable
from .manager import Manager
from .result_sizes import fit_results
from .subcomms import Topology

log = logging.getLogger(__name__)


#: while tasks are out, results wait at most this long (s) or for this many, to share a message
REPORT_DELAY = 0.001
REPORT_BATCH = 512
#: a task still running this long (s) after it started is reported as started (its future
#: becomes RUNNING); one that ends sooner is reported by its result alone
START_DELAY = 0.002
#: seconds between two looks for dead ranks while tasks are out (while idle: at once)
DEATH_CHECK = 0.002


class RankZero:
    """Rank 0, the pool's manager: its one ZeroMQ connection to the interchange, around
    ``self.mpi``, the :class:`~rankpool.mpi_pool.mpi.Manager` that holds the worker ranks
    over MPI."""

    def __init__(self, cfg: PoolConfig, comm: MPI.Intracomm, topology: Topology,
                 bell: Doorbell | None = None, near: Sequence[int] = (),
                 init_error: str = "", watch: DeathWatch | None = None) -> None:
        """``bell``: rank 0's doorbell, rung by the worker ranks ``near`` it (its node);
        ``init_error``: why the initializer failed on a worker rank (registration says it);
        ``watch``: the keepers of worker ranks it watches for deaths."""
        self.init_error = init_error
        self.cfg = cfg
        self.topology = topology
        self.bell = bell
        self.watch = watch if watch is not None and watch.watching else None
        self.mpi = Manager(comm, topology, depth=cfg.depth, lend=cfg.lend, grace=cfg.grace,
                               trace=cfg.trace,
                               device_ranks=device_ranks(topology.nodes, cfg.resources),
                               bell=bell, near=near, keep_sent=self.watch is not None)
        if self.watch is not None:
            self.mpi.end_rank = self.watch.end
        self.next_death_check = 0.0
        self.retiring = ""  # why the pool stopped taking tasks after losing ranks
        self.period = cfg.heartbeat_period
        self.threshold = cfg.heartbeat_threshold
        self.draining = False
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock_fd = self.sock.fileno()  # zmq.FD: what _wait selects on beside the bell
        # a random name for the connection, shown to no one, so that no one can claim it: the
        # interchange ignores a second connection under a name already connected
        self.sock.setsockopt(zmq.IDENTITY, secrets.token_hex(16).encode())
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.sock.setsockopt(zmq.MAXMSGSIZE, cfg.max_message_size)
        if cfg.server_key:
            from ..security import client_curve
            client_curve(self.sock, cfg.server_key)
        self.last_heard = self.last_sent = time.monotonic()
        self.first_done = 0.0
        self.reported: tuple[AbstractSet[int], AbstractSet[int]] = (frozenset(), frozenset())
        self.interrupted = ""      # the signal that stops the pool, by name
        self._in_poll = False      # blocked in the idle ZeroMQ poll: an interrupt raises there

    def run(self) -> int:
        """Serve until stopped, drained or cut off; the pool's exit status."""
        tighten_timer_slack()
        reason = "stopped"
        status = 0
        finish = False  # whether workers run what they already hold
        try:
            connect(self.sock, self.cfg)
            self.period, self.threshold = register(
                self.sock, self.cfg, self.topology, self.mpi.widest, self.mpi.largest_node,
                self.init_error, lambda: self.interrupted)
            self.last_heard = time.monotonic()
            self.loop()
        except PoolRefused as exc:
            reason, status = str(exc), ExitCode.REFUSED
        except PoolUnreachable as exc:
            reason, status = str(exc), ExitCode.UNREACHABLE
            report_unreachable(self.cfg, reason)
        except PoolLeaves as exc:
            reason, finish = str(exc), exc.finish
        finally:
            log.info("pool %s leaving: %s", self.cfg.pool_id, reason)
            self.mpi.manager_stop(finish=finish)
            self.mpi.end_orphans()
            if self.mpi.trace is not None:
                path = self.mpi.trace.write(self.cfg.run_dir, self.cfg.block_id)
                log.info("trace of %d task ranks written to %s", len(self.mpi.trace), path)
            try:
                self.sock.send_multipart(protocol.Stop(reason).encode(), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            self.sock.close()
            self.ctx.term()
        return status

    def loop(self) -> None:
        manager = self.mpi
        backoff = Backoff()
        poll_until = 0.0  # a ring brought nothing rank 0 could see yet: poll until then
        while True:
            if self.interrupted:
                raise PoolLeaves(f"interrupted by {self.interrupted}")
            if manager.outstanding:
                got = self.pool_receive(0)
                active = manager.progress() or got
                self.pool_deaths()
                self.pool_report()
                self.pool_capacity()
                if active:
                    backoff.reset()
                    poll_until = 0.0
                elif manager.rung_when_done() and time.monotonic() >= poll_until:
                    # no need to look before a ring or a message
                    if self._wait(max(backoff.next_delay(), backoff.cfg.idle_cap)):
                        poll_until = time.monotonic() + RING_GRACE
                else:
                    self._wait(backoff.next_delay())
            else:
                wait = max(0.0, self.beat_due() - time.monotonic())
                self.pool_receive(int(wait * 1000) + 1)
                manager.progress()
                self.next_death_check = 0.0
                self.pool_deaths()
                self.pool_report()
                self.pool_capacity()
            self.pool_heartbeat()
            if (self.draining or self.retiring) and manager.outstanding == 0:
                raise PoolLeaves(self.retiring or "drained", finish=True)

    def _wait(self, seconds: float) -> bool:
        """Sleep between polls while tasks are out: until a near rank rings, a message from the
        interchange arrives, or ``seconds`` passed (without a bell: just sleep); whether a
        rank rang."""
        if self.bell is None:
            time.sleep(seconds)
            return False
        if readable(self.sock):  # asking also re-arms ZMQ_FD
            return False
        return self.bell.wait(seconds, self.sock_fd)

    # -- steps ---------------------------------------------------------------------------------
    def interrupt(self, signum: int) -> None:
        """The first SIGINT or SIGTERM: leave the loop (at once when blocked in the idle poll),
        stopping the worker ranks, which were interrupted too when ``mpiexec`` forwarded it."""
        self.interrupted = signal.Signals(signum).name
        if self._in_poll:
            raise PoolLeaves(f"interrupted by {self.interrupted}")

    def pool_receive(self, timeout_ms: int) -> bool:
        sock = self.sock
        if timeout_ms:
            self._in_poll = True
            try:
                ready = not self.interrupted and self._poll(timeout_ms)
            finally:
                self._in_poll = False
        else:
            ready = self._poll(0)
        if not ready:
            return False
        while True:
            try:
                frames = recv_frames(sock)
            except zmq.Again:
                return True
            self.last_heard = time.monotonic()
            try:
                self._handle(frames)
            except ProtocolError as exc:
                log.warning("dropped a malformed message from the interchange: %s", exc)
            if not readable(sock):  # drained: no zmq.Again to raise
                return True

    def _poll(self, timeout_ms: int) -> bool:
        """Whether the socket has messages, waiting up to ``timeout_ms`` for them (or for a
        watched rank to die)."""
        fd = self.watch.fileno() if self.watch is not None and timeout_ms else None
        if fd is None:
            return bool(self.sock.poll(timeout_ms))
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(fd, zmq.POLLIN)
        return self.sock in dict(poller.poll(timeout_ms))

    def _handle(self, frames: list[Any]) -> None:
        header = wire.decode_header(frames[0].buffer)
        kind = header["k"]
        if kind == "cancel":
            self.mpi.manager_cancel(protocol.Cancel.from_header(header).task_ids)
            return
        if kind == "tasks":
            tasks = batches.decode_tasks(header, [f.buffer for f in frames[1:]], copy=True)
            if self.draining:
                log.warning("draining: %d tasks arrived anyway", len(tasks))
            if self.retiring:  # they end with the pool (ManagerLost), to run on another
                log.warning("retiring: %d tasks arrived anyway; not run", len(tasks))
                return
            self.mpi.submit_many(tasks)
            self.mpi.manager_dispatch()  # on their way to the ranks before anything else
            return
        msg = protocol.decode_message(header)
        if isinstance(msg, protocol.Stop):
            raise PoolLeaves(f"stopped by the interchange: {msg.reason}")
        if isinstance(msg, protocol.Drain):
            log.info("draining: finishing %d tasks, then leaving", self.mpi.outstanding)
            self.draining = True
        elif not isinstance(msg, protocol.Heartbeat):
            log.warning("ignored unexpected %s message", kind)

    def pool_report(self) -> None:
        """Send finished results: at once when the pool runs dry, in batches while it is busy.

        While tasks are still out, results wait up to ``REPORT_DELAY`` (or until ``REPORT_BATCH``
        piled up): a message per handful of results costs every process on the way a wake-up.
        """
        manager = self.mpi
        if manager.started:
            started = manager.take_started(START_DELAY)
            for ids in protocol.id_slices(started):
                send_frames(self.sock, protocol.Started(ids).encode())
        done = manager.completed_count
        if not done:
            return
        now = time.monotonic()
        if not self.first_done:
            self.first_done = now
        if manager.outstanding and done < REPORT_BATCH \
                and now - self.first_done < REPORT_DELAY:
            return
        self._send_results(now)

    def _send_results(self, now: float) -> None:
        values, done = self.mpi.take_completed()
        self.first_done = 0.0
        frames = result_batches.encode_results(done, values)
        if wire.message_size(frames) <= self.cfg.max_message_size:
            send_frames(self.sock, frames)
        else:  # rare: never send what the interchange's socket would refuse
            done += [result_batches.Result(task_id, [result_batches.Outcome(0, True, data)])
                     for task_id, data in zip(*values)]
            for group in fit_results(done, self.cfg.max_message_size):
                send_frames(self.sock, result_batches.encode_results(group))
        self.last_sent = now

    def pool_deaths(self) -> None:
        """Take the deaths of watched worker ranks (every ``DEATH_CHECK`` while busy); retire
        once more than ``max_lost`` of the worker ranks are gone."""
        if self.watch is None:
            return
        now = time.monotonic()
        if now < self.next_death_check:
            return
        self.next_death_check = now + DEATH_CHECK
        deaths = self.watch.deaths()
        if not deaths:
            return
        manager = self.mpi
        for death in deaths:
            manager.manager_lost(death)
        lost = len(manager.lost)
        if lost > self.cfg.max_lost * manager.widest and not self.retiring:
            self.retiring = (f"lost {lost} of {manager.widest} worker ranks {sorted(manager.lost)}"
                             f", more than --max-lost {self.cfg.max_lost:g} of them")
            log.error("pool %s retires: %s; finishing the tasks that started, the others end "
                      "with the pool", self.cfg.pool_id, self.retiring)
            manager.retire()

    def pool_capacity(self) -> None:
        """Tell the interchange when the set of stuck or dead ranks changed (it drains a pool
        with stuck ranks, or one that retires), after the results held back so far (the failed
        tasks' among them)."""
        stuck, lost = self.mpi.stuck, self.mpi.lost
        if (stuck.keys(), lost.keys()) == self.reported:
            return
        if self.mpi.completed_count:
            self._send_results(time.monotonic())
        self.reported = (frozenset(stuck), frozenset(lost))
        nodes = self.mpi.usable_node_ranks()
        self.sock.send_multipart(protocol.Capacity(sorted(stuck), nodes, sum(nodes), sorted(lost),
                                                   bool(self.retiring)).encode())
        self.last_sent = time.monotonic()
        log.warning("pool %s: stuck ranks %s, lost ranks %s; usable worker ranks %s reported to "
                    "the interchange", self.cfg.pool_id, sorted(stuck), sorted(lost), nodes)

    def beat_due(self) -> float:
        """When the pool's next heartbeat is due, unless it sends something else first.

        A period after its last message once the interchange spoke since then (its heartbeat,
        answered, or tasks); otherwise a third of the threshold after it: an interchange with
        many pools beats each less often than every period (``interchange.pools.beat_interval``)
        and its pools answer, so the idle traffic follows the interchange's pace both ways.
        """
        if self.last_heard > self.last_sent:
            return self.last_sent + self.period
        return self.last_sent + max(self.period, self.threshold / 3)

    def pool_heartbeat(self) -> None:
        now = time.monotonic()
        if now >= self.beat_due():
            self.sock.send_multipart(protocol.Heartbeat().encode())
            self.last_sent = now
        if now - self.last_heard > self.threshold:
            raise PoolLeaves(f"the interchange has been silent for {now - self.last_heard:.1f} s "
                             f"(threshold {self.threshold:g} s)")
