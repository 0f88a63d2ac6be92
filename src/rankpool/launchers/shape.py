"""The one rule for what a block holds, for every front-end and launcher.

A front-end with a Parsl provider asks :func:`block_shape`; a rankpool launcher's own
arithmetic is :meth:`~rankpool.launchers.template.RankLauncher.block_shape`; a local block of
``N`` worker ranks is :func:`local_shape`. All three give a :class:`BlockShape`. Parsl's
launcher classes are loaded by :func:`block_shape` only: a front-end without a provider
(``rankpool.Executor``'s local blocks) never imports Parsl.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from .allocation import fit_provider
from .local import positive_int

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlockShape:
    """What one block holds: for submit's checks, Parsl's scaling and ``launch_cmd``'s fields.

    Every front-end and launcher gets it from one rule, :func:`block_shape` (a rankpool
    launcher's own arithmetic is :meth:`~rankpool.launchers.template.RankLauncher.block_shape`).
    """

    nodes: int
    #: the executor's ``ranks_per_node``, as the block's launcher counts it
    ranks_per_node: int
    #: the ranks one pool launch starts (``launch_cmd``'s ``{ranks}``)
    total_ranks: int
    #: the worker ranks of the whole block (every rank but the managers)
    worker_ranks: int
    #: the widest task that fits on one node: the first node also holds the manager
    largest_node_task: int
    #: the widest task one pool can run: ``worker_ranks`` (0 says so), unless a per-node
    #: launcher starts one pool per node
    widest_task: int = 0
    #: what the block's job asks the provider for per node (``provider.submit``'s argument):
    #: the slots one launch of the whole block uses per node (0: ``ranks_per_node``, as a
    #: rankpool launcher's), or 1 for launchers that start that many copies of the command
    tasks_per_node: int = 0

    def __post_init__(self) -> None:
        if not self.widest_task:
            object.__setattr__(self, "widest_task", self.worker_ranks)
        if not self.tasks_per_node:
            object.__setattr__(self, "tasks_per_node", self.ranks_per_node)

    @property
    def workers_per_node(self) -> int | float:
        """Worker ranks per node, the unit of Parsl's scaling arithmetic (slots per node)."""
        per = self.worker_ranks / self.nodes
        return int(per) if per == int(per) else per


def local_shape(workers_per_node: int, nodes: int = 1, *, one_launch: bool = True) -> BlockShape:
    """``workers_per_node`` worker ranks on each node, the manager one rank more (the local
    block's layout, and that of launchers rankpool does not know); ``one_launch``: the launcher
    starts the command once, so the job holds ``workers_per_node + 1`` slots per node (the
    manager's node has one rank more), else one."""
    rpn = workers_per_node
    return BlockShape(nodes, rpn, nodes * rpn + 1, nodes * rpn, rpn,
                      tasks_per_node=rpn + 1 if one_launch else 1)


def block_shape(provider: Any, ranks_per_node: int | None, launch_cmd: str | None = None, *,
                allow_per_node: bool = False) -> BlockShape:
    """Configure the provider's launcher, fit its jobs to the block, and say what a block holds.

    The provider is asked for the shape's ``tasks_per_node`` through its own options where
    ``provider.submit``'s argument is not enough
    (:func:`rankpool.launchers.allocation.fit_provider`).

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
           allow_per_node: bool) -> BlockShape:
    from parsl.launchers import SimpleLauncher

    from .detect import configure_launcher, is_per_node_launcher
    from .local_launcher import LocalMpiexecLauncher
    from .template import RankLauncher
    nodes = getattr(provider, "nodes_per_block", 1)
    positive_int("provider.nodes_per_block", nodes)
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
        return local_shape(rpn, nodes)
    if isinstance(launcher, SimpleLauncher):
        if not launch_cmd:
            raise ValueError("provider: Parsl's SimpleLauncher starts the pool as one process "
                             "with no worker ranks; use a rankpool launcher, or a launch_cmd that "
                             "starts MPI such as 'mpiexec -n {ranks} {command}'")
        return local_shape(ranks_per_node or cores or os.cpu_count() or 1, nodes)
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
        return launcher.block_shape(nodes)
    if is_per_node_launcher(launcher):
        rpn = rpn or cores
        if rpn is None or rpn < 2:
            raise ValueError(f"ranks_per_node must be at least 2 for per-node pools (each one "
                             f"holds its manager), got {rpn!r}")
        if not launch_cmd:
            log.warning("%s starts the pool command once per node; without a launch_cmd that "
                        "starts MPI (e.g. 'mpiexec -n {ranks} {command}') each copy is a pool "
                        "of one rank, which the interchange refuses", type(launcher).__name__)
        return BlockShape(nodes, rpn, rpn, nodes * (rpn - 1), rpn - 1, rpn - 1, 1)
    return local_shape(rpn or cores or os.cpu_count() or 1, nodes, one_launch=False)
