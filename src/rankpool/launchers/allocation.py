"""A block's batch job asks for the slots its launch line uses.

Parsl's ``BlockProviderExecutor`` submits every block with ``tasks_per_node=1``: right for an
executor that starts one worker process per node, wrong for a block that is one MPI
application of ``ranks_per_node`` ranks per node. On nodes shared with other jobs Slurm then
refuses ``srun --ntasks-per-node 4`` inside a job that holds one task per node. rankpool
submits a block with its launch's ranks per node as ``tasks_per_node`` instead, and
:func:`fit_provider` writes, or checks, what a provider asks for through its own options:

==================  ===========================================================================
provider            how a block's job holds ``SLOTS`` per node
==================  ===========================================================================
SlurmProvider       ``#SBATCH --ntasks-per-node=SLOTS`` (``tasks_per_node``); a
                    ``cores_per_node`` below ``SLOTS`` is refused (``--cpus-per-task`` is 0)
TorqueProvider      ``#PBS -l nodes=N:ppn=SLOTS`` (``tasks_per_node``)
PBSProProvider      ``#PBS -l select=N:ncpus=C:mpiprocs=SLOTS`` (``mpiprocs`` added to
                    ``select_options``; another ``mpiprocs`` there is refused)
LSFProvider         whole nodes (``request_by_nodes``, Parsl's default); otherwise a
                    ``cores_per_node`` below ``SLOTS`` is refused
GridEngineProvider  a parallel environment only ``scheduler_options`` can name: a warning
                    when they name none
LocalProvider       nothing: the launch runs on this machine, or inside an allocation that
                    places the ranks itself (``flux run``, ``srun`` inside ``salloc``)
==================  ===========================================================================

Nothing here submits a job or starts a process.
"""

from __future__ import annotations

import logging
import re
from typing import Any

log = logging.getLogger(__name__)

_MPIPROCS = re.compile(r"(?:^|:)mpiprocs=(\d+)")


def fit_provider(provider: Any, slots: int) -> None:
    """Make ``provider``'s jobs hold ``slots`` tasks per node where its own options say so, and
    refuse settings that cannot hold them (the error names the provider's argument).

    Writes only what the provider's template takes from no ``tasks_per_node``: ``:mpiprocs=``
    in ``PBSProProvider.select_options``. Calling it again with the same ``slots`` changes
    nothing.
    """
    from parsl.providers import (
        GridEngineProvider,
        LSFProvider,
        PBSProProvider,
        SlurmProvider,
    )
    if isinstance(provider, SlurmProvider):
        cores = provider.cores_per_node
        if cores is not None and cores < slots:
            raise ValueError(f"SlurmProvider(cores_per_node={cores}) is fewer cores than the "
                             f"{slots} tasks per node a block launches; raise cores_per_node or "
                             f"leave it unset")
    elif isinstance(provider, PBSProProvider):
        _fit_pbspro(provider, slots)
    elif isinstance(provider, LSFProvider):
        cores = provider.cores_per_node
        if not provider.request_by_nodes and cores is not None and cores < slots:
            raise ValueError(f"LSFProvider(cores_per_node={cores}) is fewer cores than the "
                             f"{slots} ranks per node a block launches; raise cores_per_node "
                             f"or request whole nodes (request_by_nodes=True)")
    elif isinstance(provider, GridEngineProvider):
        if "-pe" not in (provider.scheduler_options or ""):
            log.warning("GridEngineProvider: scheduler_options name no parallel environment "
                        "('#$ -pe NAME SLOTS'), so a block's job may hold one slot while its "
                        "launch starts %d ranks per node", slots)


def _fit_pbspro(provider: Any, slots: int) -> None:
    options = provider.select_options or ""
    found = _MPIPROCS.search(options)
    if found is None:
        provider.select_options = f"{options.rstrip(':')}:mpiprocs={slots}"
    elif int(found.group(1)) != slots:
        raise ValueError(f"PBSProProvider(select_options={options!r}) asks for "
                         f"mpiprocs={found.group(1)}, but a block launches {slots} ranks per "
                         f"node; leave mpiprocs out or make it {slots}")
    cpus = provider.cpus_per_node
    if isinstance(cpus, int) and cpus < slots:
        log.warning("PBSProProvider(cpus_per_node=%d): the %d ranks per node of a block share "
                    "%d CPUs per node", cpus, slots, cpus)
