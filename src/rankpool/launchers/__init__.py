"""Parsl launchers that start a rankpool block as ONE MPI application.

A Parsl provider writes a job script whose last line its launcher produces from the pool
command (``python -m rankpool.mpi_pool --interchange ... --block-id ...``). These launchers
make that line a single ``mpiexec``/``srun``/``mpirun``/``aprun``/``jsrun``/``flux run`` of the
whole block, so every rank of every node of the block joins one ``MPI_COMM_WORLD``.

Rank layout (the one decision to remember)::

    total ranks  = nodes_per_block * ranks_per_node
    rank 0       = the manager, in one slot of the first node
    worker ranks = total ranks - 1   (the first node has one worker fewer than the others)

``ranks_per_node`` therefore counts every MPI rank on a node. The launcher carries it
itself: given to its constructor, or set by the executor (``launcher.ranks_per_node = n``, or
:func:`configure_launcher`, which also refuses Parsl's own per-node launchers). rankpool's
executors submit a block with ``tasks_per_node=ranks_per_node``, so that its job holds the
slots its launch line uses (:mod:`rankpool.launchers.allocation`).
:meth:`RankLauncher.block_shape` gives the worker count and the widest one-node task;
:func:`rankpool.launchers.shape.block_shape` is the one rule every front-end asks, for any
launcher (rankpool's, the local default :class:`~rankpool.launchers.local.LocalMpiexecLauncher`,
Parsl's own).

    from parsl.providers import SlurmProvider
    from rankpool.launchers import SrunLauncher

    provider = SlurmProvider(nodes_per_block=4,
                             launcher=SrunLauncher(ranks_per_node=8, mpi="pmix"))
    # job script: srun --ntasks 32 --ntasks-per-node 8 --nodes 4 --mpi=pmix python -m ...
"""

from __future__ import annotations

from .detect import (
                        LaunchStyle,
                        configure_launcher,
                        describe,
                        is_per_node_launcher,
                        launch_style,
)
from .launchers import (
                        MPIEXEC_FLAVORS,
                        AprunLauncher,
                        FluxLauncher,
                        JsrunLauncher,
                        MpiexecLauncher,
                        MpirunLauncher,
                        SrunLauncher,
)
from .template import BlockShape, RankLauncher, Syntax, wrap_command

__all__ = ["AprunLauncher", "BlockShape", "FluxLauncher", "JsrunLauncher", "LaunchStyle",
           "MPIEXEC_FLAVORS", "MpiexecLauncher", "MpirunLauncher", "RankLauncher",
           "SrunLauncher", "Syntax", "configure_launcher", "describe", "is_per_node_launcher",
           "launch_style", "wrap_command"]
