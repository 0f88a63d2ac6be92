"""How rank 0 joins the interchange: it connects, registers (``Register``, answered by
``Registered`` within the heartbeat threshold, with the heartbeat period and threshold to
keep), and, when the interchange cannot be reached, says why in its log, on stderr and in its
start record."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import zmq

from .._version import __version__
from ..protocol import messages as protocol
from ..protocol import wire
from ..protocol.starts import StartCause
from ..task.node_resources import devices_list
from .config import PoolConfig
from .leaving import PoolLeaves, PoolRefused, PoolUnreachable, write_start_record
from .subcomms import Topology

log = logging.getLogger(__name__)


def connect(sock: zmq.Socket[bytes], cfg: PoolConfig) -> None:
    """Connect rank 0's DEALER to the interchange's pool port."""
    try:
        sock.connect(cfg.interchange)
    except zmq.ZMQError as exc:
        raise PoolUnreachable(f"cannot connect to the interchange at "
                              f"{cfg.interchange}: {exc}") from None


def register(sock: zmq.Socket[bytes], cfg: PoolConfig, topology: Topology, widest: int,
             largest_node: int, init_error: str,
             interrupted: Callable[[], str]) -> tuple[float, float]:
    """Register the pool (``widest`` worker ranks, at most ``largest_node`` on a node;
    ``init_error``: why the initializer failed on a worker rank) and wait for the answer; the
    heartbeat period and threshold the interchange gave.

    Raises :class:`PoolRefused` when refused, :class:`PoolUnreachable` without an answer within
    the configured heartbeat threshold, and :class:`PoolLeaves` once ``interrupted()`` names a
    signal."""
    reg = protocol.Register(
        protocol.PROTOCOL_VERSION, __version__, protocol.PYTHON_VERSION, cfg.block_id,
        cfg.pool_id, topology.hosts, [len(n) for n in topology.nodes],
        widest, largest_node, devices_list(topology.nodes, cfg.resources), init_error)
    sock.send_multipart(reg.encode())
    log.info("pool %s: %d worker ranks on %s; registering with %s", cfg.pool_id,
             widest, topology.hosts, cfg.interchange)
    if reg.devices or cfg.resources.cpu_affinity != "none":
        log.info("node resources %s; devices by rank %s", cfg.resources.describe(),
                 {r: d for r, d in enumerate(reg.devices) if d})
    threshold = cfg.heartbeat_threshold
    deadline = time.monotonic() + threshold
    while time.monotonic() < deadline:
        if signame := interrupted():
            raise PoolLeaves(f"interrupted by {signame} before it registered")
        if not sock.poll(100):
            continue
        frames = sock.recv_multipart()
        msg = protocol.decode_message(wire.decode_header(frames[0]))
        if isinstance(msg, protocol.Registered):
            if msg.error:
                print(f"rankpool pool {cfg.pool_id}: refused by the interchange: "
                      f"{msg.error}", file=sys.stderr, flush=True)
                raise PoolRefused(f"refused: {msg.error}")
            return msg.heartbeat_period, msg.heartbeat_threshold
    hint = "" if cfg.server_key else (
        " (interchanges admit only pools with the run's keys unless started with "
        "encrypted=False: pass --server-key <run dir>/curve/server.key)")
    raise PoolUnreachable(
        f"no answer from the interchange at {cfg.interchange} for {threshold:g} s "
        f"(the heartbeat threshold); giving up. Check that this node reaches that address "
        f"and port (the executor's address, a firewall), that the executor is running, and "
        f"that the pool uses the run's keys{hint}")


def report_unreachable(cfg: PoolConfig, reason: str) -> None:
    """Say why the pool gives up: in its log, on stderr (the job's error file), and in
    its start record, which the executor reads when the block's job ends."""
    log.error("pool %s: %s", cfg.pool_id, reason)
    print(f"rankpool pool {cfg.pool_id}: {reason}", file=sys.stderr, flush=True)
    if cfg.run_dir:
        write_start_record(cfg, StartCause.UNREACHABLE, reason)
