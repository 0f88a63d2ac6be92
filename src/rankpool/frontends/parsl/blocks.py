"""Blocks for :class:`~rankpool.frontends.parsl.executor.ExtremeScaleExecutor`: launcher, command, shape.

A block is one MPI application of ``workers + 1`` ranks running ``python -m rankpool.mpi_pool``
(rank 0 is the pool's manager). This module holds what the executor needs to start one:

* :class:`LocalMpiexecLauncher`, the default provider's launcher: the bundled ``mpiexec`` on
  this machine, with a job script that forwards the provider's ``cancel`` to ``mpiexec``
  (Hydra puts ``mpiexec`` in a session of its own, out of reach of the provider's kill);
* :func:`block_shape`, which decides how many worker ranks a block holds for a given
  provider, launcher and ``ranks_per_node``;
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
from dataclasses import dataclass
from typing import Any

from parsl.launchers import SimpleLauncher
from parsl.launchers.base import Launcher

from ...launchers import RankLauncher, configure_launcher, is_per_node_launcher
from ...launchers.allocation import fit_provider
from ...launchers.mpiexec import find_mpiexec
from ...mpi_pool.config import PoolConfig

log = logging.getLogger(__name__)

#: fields a ``launch_cmd`` override may name
LAUNCH_FIELDS = frozenset({"command", "block_id", "ranks", "workers", "ranks_per_node",
                           "nodes_per_block", "interchange", "python", "mpiexec"})

#: the environment variable Parsl's monitoring wrapper reads to fill the ``try`` table's block
BLOCK_ENV = "PARSL_WORKER_BLOCK_ID"


class LocalMpiexecLauncher(Launcher):
    """Start the pool with ``mpiexec -n WORKERS+1`` on this machine (the default provider's).

    The executor sets ``ranks_per_node`` (worker ranks per node) before the first block; the
    ``tasks_per_node`` a provider passes is not a shape this launcher follows. The job script
    runs ``mpiexec`` in the background and forwards SIGTERM/SIGINT/SIGHUP to it, then exits
    with its status, so ``LocalProvider.cancel`` stops the MPI job and a killed ``mpiexec``
    shows as a failed job in the provider's status.
    """

    def __init__(self, *, ranks_per_node: int | None = None, mpiexec: str | None = None,
                 debug: bool = False) -> None:
        super().__init__(debug=debug)
        if ranks_per_node is not None:
            _check_positive_int("ranks_per_node", ranks_per_node)
        if mpiexec is not None and (not isinstance(mpiexec, str) or not mpiexec.strip()):
            raise ValueError(f"mpiexec must be a program name or path, got {mpiexec!r}")
        self.ranks_per_node = ranks_per_node
        self.mpiexec = mpiexec

    def __call__(self, command: str, tasks_per_node: int, nodes_per_block: int,
                 script_dir: str = "") -> str:
        if self.ranks_per_node is None:
            raise ValueError("LocalMpiexecLauncher.ranks_per_node is not set: give it to the "
                             "launcher or to the executor")
        ranks = self.ranks_per_node * nodes_per_block + 1
        line = f"{shlex.quote(find_mpiexec(self.mpiexec))} -n {ranks} {command}"
        echo = f"echo {shlex.quote('rankpool launch: ' + line)}\n" if self.debug else ""
        return (f"{echo}{line} &\n"
                "_rankpool_pid=$!\n"
                "trap 'kill -TERM \"$_rankpool_pid\" 2>/dev/null' TERM INT HUP\n"
                "wait \"$_rankpool_pid\"\n"
                "_rankpool_ec=$?\n"
                "if kill -0 \"$_rankpool_pid\" 2>/dev/null; then\n"
                "    wait \"$_rankpool_pid\"\n"
                "    _rankpool_ec=$?\n"
                "fi\n"
                "exit \"$_rankpool_ec\"\n")


def local_provider(*, ranks_per_node: int | None = None, mpiexec: str | None = None,
                   **provider_kwargs: Any) -> Any:
    """A ``LocalProvider`` whose blocks are pools under the bundled ``mpiexec``.

    ``provider_kwargs`` go to ``LocalProvider`` (``init_blocks``, ``min_blocks``,
    ``max_blocks``, ``worker_init``, ...); ``nodes_per_block`` must stay 1.
    """
    from parsl.providers import LocalProvider
    if "launcher" in provider_kwargs:
        raise TypeError("local_provider sets its own launcher; build a LocalProvider instead")
    if provider_kwargs.get("nodes_per_block", 1) != 1:
        raise ValueError("nodes_per_block: a local provider has one node per block")
    return LocalProvider(launcher=LocalMpiexecLauncher(ranks_per_node=ranks_per_node,
                                                       mpiexec=mpiexec), **provider_kwargs)


@dataclass(frozen=True)
class Shape:
    """What one block holds, for submit's checks, Parsl's scaling and ``launch_cmd``'s fields.

    ``workers`` counts the worker ranks of the whole block, ``widest`` the widest task one of
    its pools can run (the same, unless a per-node launcher starts one pool per node),
    ``largest_node`` the widest task on one node, ``mpi_ranks`` the ranks one pool launch
    starts (``{ranks}``), ``ranks_per_node`` the executor's ``ranks_per_node`` as its launcher
    counts it, ``tasks_per_node`` what the block's job asks the provider for per node
    (``provider.submit``'s argument): the slots one launch of the whole block uses per node, or
    1 for launchers that start that many copies of the pool command per node.
    """

    nodes: int
    workers: int
    largest_node: int
    mpi_ranks: int
    ranks_per_node: int
    widest: int
    tasks_per_node: int = 1

    @property
    def workers_per_node(self) -> int | float:
        """Worker ranks per node, the unit of Parsl's scaling arithmetic (slots per node)."""
        per = self.workers / self.nodes
        return int(per) if per == int(per) else per


def _manager_extra(nodes: int, rpn: int, *, one_launch: bool = True) -> Shape:
    """``rpn`` worker ranks per node, the manager one rank more (the local and launch_cmd
    layout); ``one_launch``: the launcher starts the command once, so the job holds
    ``rpn + 1`` slots per node (the manager's node has one rank more than ``rpn``)."""
    return Shape(nodes, nodes * rpn, rpn, nodes * rpn + 1, rpn, nodes * rpn,
                 rpn + 1 if one_launch else 1)


def block_shape(provider: Any, ranks_per_node: int | None, launch_cmd: str | None, *,
                allow_per_node: bool = False) -> Shape:
    """Configure the provider's launcher, fit its jobs to the block, and say what a block holds.

    The provider is asked for the shape's ``tasks_per_node`` through its own options where
    ``provider.submit``'s argument is not enough (:func:`rankpool.launchers.allocation.fit_provider`).

    The executor's ``ranks_per_node`` goes to the launcher unchanged
    (:func:`rankpool.launchers.configure_launcher`), and means what the launcher counts:

    * a rankpool launcher (``rankpool.launchers``, for batch allocations): every MPI rank on a
      node, the manager included: ``nodes * ranks_per_node`` ranks, one fewer workers
      (:meth:`~rankpool.launchers.RankLauncher.block_shape`); default: the provider's
      ``cores_per_node``;
    * the local default (:class:`LocalMpiexecLauncher`), Parsl's ``SimpleLauncher`` with a
      ``launch_cmd``, and launchers rankpool does not know: worker ranks, the manager being one
      more process (no allocation's slots to stay within); default: ``cores_per_node``, else
      this machine's cores;
    * Parsl's per-node launchers, only with ``allow_per_node``: one pool per node, each of
      ``ranks_per_node`` MPI ranks, the manager included (``launch_cmd`` must start them).
    """
    shape = _shape(provider, ranks_per_node, launch_cmd, allow_per_node)
    if shape.tasks_per_node > 1:
        fit_provider(provider, shape.tasks_per_node)
    return shape


def _shape(provider: Any, ranks_per_node: int | None, launch_cmd: str | None,
           allow_per_node: bool) -> Shape:
    nodes = getattr(provider, "nodes_per_block", 1)
    _check_positive_int("provider.nodes_per_block", nodes)
    launcher = getattr(provider, "launcher", None)
    cores = getattr(provider, "cores_per_node", None)
    if isinstance(launcher, LocalMpiexecLauncher):
        rpn = ranks_per_node if ranks_per_node is not None else launcher.ranks_per_node
        if rpn is None:
            rpn = max(1, os.cpu_count() or 1)
        if launcher.ranks_per_node not in (None, rpn):
            raise ValueError(f"ranks_per_node={rpn} disagrees with the provider's "
                             f"LocalMpiexecLauncher(ranks_per_node={launcher.ranks_per_node})")
        launcher.ranks_per_node = rpn
        return _manager_extra(nodes, rpn)
    if isinstance(launcher, SimpleLauncher):
        if not launch_cmd:
            raise ValueError("provider: Parsl's SimpleLauncher starts the pool as one process "
                             "with no worker ranks; use a rankpool launcher, or a launch_cmd that "
                             "starts MPI such as 'mpiexec -n {ranks} {command}'")
        return _manager_extra(nodes, ranks_per_node or cores or os.cpu_count() or 1)
    if isinstance(launcher, RankLauncher) and ranks_per_node is None \
            and launcher.ranks_per_node is None and cores:
        ranks_per_node = cores
    try:
        rpn = configure_launcher(launcher, ranks_per_node=ranks_per_node,
                                 allow_per_node=allow_per_node)
    except ValueError as exc:
        if isinstance(launcher, RankLauncher):
            raise  # it names ranks_per_node
        raise ValueError(f"provider.{exc} (allow_per_node_launcher=True, with a launch_cmd "
                         f"that starts each node's pool)") from None
    if isinstance(launcher, RankLauncher):
        s = launcher.block_shape(nodes)
        return Shape(nodes, s.worker_ranks, s.largest_node_task, s.total_ranks, s.ranks_per_node,
                     s.worker_ranks, s.ranks_per_node)
    if is_per_node_launcher(launcher):
        rpn = rpn or cores
        if rpn is None or rpn < 2:
            raise ValueError(f"ranks_per_node must be at least 2 for per-node pools (each one "
                             f"holds its manager), got {rpn!r}")
        if not launch_cmd:
            log.warning("%s starts the pool command once per node; without a launch_cmd that "
                        "starts MPI (e.g. 'mpiexec -n {ranks} {command}') each copy is a pool "
                        "of one rank, which the interchange refuses", type(launcher).__name__)
        return Shape(nodes, nodes * (rpn - 1), rpn - 1, rpn, rpn, rpn - 1)
    return _manager_extra(nodes, rpn or cores or os.cpu_count() or 1, one_launch=False)


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


def launch_command(cfg: PoolConfig, shape: Shape, *, working_dir: str | None = None,
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
        "command": command, "block_id": cfg.block_id, "ranks": shape.mpi_ranks,
        "workers": shape.workers, "ranks_per_node": shape.ranks_per_node,
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


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value
