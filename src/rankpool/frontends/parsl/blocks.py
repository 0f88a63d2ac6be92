"""Blocks for :class:`~rankpool.frontends.parsl.executor.ExtremeScaleExecutor`: the command
and the monitoring rows.

A block is one MPI application running ``python -m rankpool.mpi_pool`` (rank 0 is the pool's
manager); what it holds comes from :func:`rankpool.launchers.shape.block_shape`, its default
launcher is :class:`rankpool.launchers.local_launcher.LocalMpiexecLauncher`. This module holds:

* :func:`launch_command`, the pool command line (and the ``launch_cmd`` override);
* :func:`node_info`, the monitoring database's ``node`` rows for one pool.

Nothing here starts a process or opens a socket.
"""

from __future__ import annotations

import datetime
import logging
import os
import shlex
import socket
import string
import sys
from typing import Any

from ...launchers.mpiexec import find_mpiexec
from ...launchers.shape import BlockShape
from ...mpi_pool.config import PoolConfig

log = logging.getLogger(__name__)

#: fields a ``launch_cmd`` override may name
LAUNCH_FIELDS = frozenset({"command", "block_id", "ranks", "workers", "ranks_per_node",
                           "nodes_per_block", "interchange", "python", "mpiexec"})

#: the environment variable Parsl's monitoring wrapper reads to fill the ``try`` table's block
BLOCK_ENV = "PARSL_WORKER_BLOCK_ID"


def check_launch_cmd(launch_cmd: str | None) -> None:
    """Refuse a ``launch_cmd`` that names fields :func:`launch_command` does not fill."""
    if launch_cmd is None:
        return
    if not isinstance(launch_cmd, str) or "{command}" not in launch_cmd:
        raise ValueError(f"launch_cmd must be a format string containing {{command}}, "
                         f"got {launch_cmd!r}")
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(launch_cmd) if f is not None}
    except ValueError as exc:
        raise ValueError(f"launch_cmd is not a valid format string: {exc}") from None
    unknown = sorted(n for n in names if n not in LAUNCH_FIELDS)
    if unknown:
        raise ValueError(f"launch_cmd names unknown field {{{unknown[0]}}}; known fields are "
                         f"{sorted(LAUNCH_FIELDS)}")


def launch_command(cfg: PoolConfig, shape: BlockShape, *, working_dir: str | None = None,
                   launch_cmd: str | None = None) -> str:
    """The command a provider's launcher starts on every rank of one block.

    ``env PARSL_WORKER_BLOCK_ID=<block> python -m rankpool.mpi_pool ...``, run from
    ``working_dir`` when one is set, then put into ``launch_cmd`` (its ``{command}`` field)
    when that override is given.
    """
    argv = ["env", f"{BLOCK_ENV}={cfg.block_id}", sys.executable, "-m", "rankpool.mpi_pool",
            *cfg.to_argv()]
    command = shlex.join(argv)
    if working_dir:
        command = f"/bin/sh -c {shlex.quote(f'cd {shlex.quote(working_dir)} && exec {command}')}"
    if not launch_cmd:
        return command
    fields: dict[str, Any] = {
        "command": command, "block_id": cfg.block_id, "ranks": shape.total_ranks,
        "workers": shape.worker_ranks, "ranks_per_node": shape.ranks_per_node,
        "nodes_per_block": shape.nodes, "interchange": cfg.interchange,
        "python": shlex.quote(sys.executable)}
    if "{mpiexec}" in launch_cmd:
        fields["mpiexec"] = shlex.quote(find_mpiexec())
    return launch_cmd.format(**fields)


def node_info(pool: dict[str, Any], run_id: str | None, active: bool) -> list[dict[str, Any]]:
    """The monitoring ``node`` rows of one pool (as the ``pools`` command describes it).

    One row per host, ``uid`` the pool id, ``worker_count`` the worker ranks on that host. The
    pool does not report its hosts' CPUs and memory, so those are filled in for this machine
    only and are 0 for other hosts.
    """
    now = datetime.datetime.now()
    last = now - datetime.timedelta(seconds=float(pool.get("last_seen_s", 0.0)))
    here = socket.gethostname()
    rows = []
    hosts = pool.get("hosts", [])
    counts = pool.get("node_ranks", [])
    for index, host in enumerate(hosts):
        cpus, memory = _local_capacity() if host == here else (0, 0)
        rows.append({"run_id": run_id, "hostname": host, "uid": pool.get("pool_id", ""),
                     "block_id": pool.get("block_id", ""), "cpu_count": cpus,
                     "total_memory": memory, "active": active,
                     "worker_count": counts[index] if index < len(counts) else 0,
                     "python_v": pool.get("python", ""), "timestamp": now,
                     "last_heartbeat": last})
    return rows


def _local_capacity() -> tuple[int, int]:
    try:
        import psutil
        return psutil.cpu_count() or 0, int(psutil.virtual_memory().total)
    except Exception:  # psutil missing or unreadable /proc: the row still goes in
        return os.cpu_count() or 0, 0
