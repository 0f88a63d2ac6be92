"""Starting a run: what every ZeroMQ front-end does once before its first block.

:func:`start_session` makes the run directory and (when connections are encrypted) its keys,
the shared-memory plane (when on), starts the interchange through an
:class:`~rankpool.frontends.client.InterchangeClient`, writes ``interchange.json`` and builds
the :class:`~rankpool.mpi_pool.config.PoolConfig` every block's pool starts from.
``rankpool.Executor`` calls it in its constructor, ``ExtremeScaleExecutor`` in ``start``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..interchange.config import InterchangeConfig
from ..launchers.rundir import make_run_dir, write_interchange_info
from ..mpi_pool.config import PoolConfig
from ..protocol.messages import Lost, Refused
from ..protocol.result_batches import Result, Values
from ..protocol.wire import MAX_MESSAGE_SIZE
from ..shm.plane import FrontEndPlane, closed_on_failure, shm_options
from ..task.node_resources import NodeResources

if TYPE_CHECKING:
    from .client import InterchangeClient


@dataclass(frozen=True)
class SessionOptions:
    """How to start a run: the interchange's sockets and liveness, and what pools are told.

    ``run_dir``: logs and keys (None: the next ``rankpool-runs/NNN``); ``encrypted``: as asked
    (None: on, loopback included; False warns, naming the risk); ``shared_memory``: whether to
    make a plane, holding at most ``shared_memory_cap`` bytes; ``log_level`` is the
    interchange's, and the pools' unless ``worker_debug``; ``max_message_size``: the cap every
    socket of the run puts on a message.
    """

    address: str
    heartbeat_period: float
    heartbeat_threshold: float
    resources: NodeResources
    run_dir: str | None = None
    pool_port: int = 0
    port_range: tuple[int, int] | None = None
    encrypted: bool | None = None
    log_level: str = "INFO"
    worker_debug: bool = False
    trace: bool = False
    shared_memory: bool = False
    shared_memory_cap: int = 0
    max_message_size: int = MAX_MESSAGE_SIZE


@dataclass(frozen=True)
class Session:
    """A started run: where it lives, its interchange, and the pool configuration."""

    run_dir: str
    encrypted: bool
    #: the key file pools need (empty when connections are not encrypted)
    server_key: str
    client: InterchangeClient
    plane: FrontEndPlane | None
    pool_config: PoolConfig


def start_session(options: SessionOptions, *,
                  on_results: Callable[[Values, list[Result]], None],
                  on_lost: Callable[[Lost], None], on_broken: Callable[[str], None],
                  on_refused: Callable[[Refused], None] | None = None) -> Session:
    """Start a run (the callbacks go to the client: see
    :class:`~rankpool.frontends.client.InterchangeClient`); the plane's files are removed
    again if the interchange does not start."""
    from ..security import choose_encryption, make_keys  # zmq only where sockets live
    from .client import InterchangeClient
    encrypted = choose_encryption(options.encrypted, options.address)
    run_dir = make_run_dir(options.run_dir)
    keys = make_keys(run_dir) if encrypted else None
    server_key = keys.server_public if keys else ""
    plane = FrontEndPlane(options.shared_memory_cap) if options.shared_memory else None
    client = InterchangeClient(
        InterchangeConfig(address=options.address, pool_port=options.pool_port,
                          port_range=options.port_range,
                          heartbeat_period=options.heartbeat_period,
                          heartbeat_threshold=options.heartbeat_threshold, run_dir=run_dir,
                          log_level=options.log_level, parent_pid=os.getpid(),
                          curve_dir=keys.directory if keys else "",
                          shm_prefix=plane.prefix if plane else "",
                          max_message_size=options.max_message_size),
        on_results=on_results, on_lost=on_lost, on_broken=on_broken, on_refused=on_refused)
    with closed_on_failure(plane):
        client.start()
    write_interchange_info(run_dir, client.ports, client.pool_address, server_key)
    pool_config = PoolConfig(
        interchange=client.pool_address, block_id="0",
        heartbeat_period=options.heartbeat_period,
        heartbeat_threshold=options.heartbeat_threshold, run_dir=run_dir,
        log_level="DEBUG" if options.worker_debug else options.log_level,
        worker_debug=options.worker_debug, trace=options.trace, server_key=server_key,
        resources=options.resources, max_message_size=options.max_message_size,
        **shm_options(plane))
    return Session(run_dir, encrypted, server_key, client, plane, pool_config)
