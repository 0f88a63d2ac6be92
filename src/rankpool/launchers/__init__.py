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
launcher (rankpool's, the local default
:class:`~rankpool.launchers.local_launcher.LocalMpiexecLauncher`, Parsl's own).

    from parsl.providers import SlurmProvider
    from rankpool.launchers import SrunLauncher

    provider = SlurmProvider(nodes_per_block=4,
                             launcher=SrunLauncher(ranks_per_node=8, mpi="pmix"))
    # job script: srun --ntasks 32 --ntasks-per-node 8 --nodes 4 --mpi=pmix python -m ...
"""

from __future__ import annotations

from typing import Any

from .._lazy import load

#: each public name and the module that defines it, loaded when first asked for: the names
#: here are Parsl launchers, and a module of this package that needs no Parsl (local blocks,
#: block shapes, failed starts) is imported without it
_WHERE = {
    "LaunchStyle": ".detect", "configure_launcher": ".detect", "describe": ".detect",
    "is_per_node_launcher": ".detect", "launch_style": ".detect",
    "MPIEXEC_FLAVORS": ".launchers", "AprunLauncher": ".launchers", "FluxLauncher": ".launchers",
    "JsrunLauncher": ".launchers", "MpiexecLauncher": ".launchers",
    "MpirunLauncher": ".launchers", "SrunLauncher": ".launchers",
    "RankLauncher": ".template", "Syntax": ".template", "wrap_command": ".template",
    "BlockShape": ".shape",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    return load(__name__, _WHERE, name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
