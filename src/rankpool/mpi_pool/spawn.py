"""Spawn mode of :func:`rankpool.run_mpi`: the application started with ``MPI_Comm_spawn``.

Opt-in (``run_mpi(argv, mode="spawn")``): the task's first rank spawns the program's
``RANKPOOL_NUM_RANKS`` processes on the held ranks' hosts (MPICH's ``host``/``hostfile`` info
keys) with no launcher process of its own. MPI tells a parent neither when its children end
nor how (MPICH's ``MPI_Comm_disconnect`` returns at once), so a program run this way must say
it is done: a barrier on its parent intercommunicator (``MPI_Comm_get_parent``) before it
finishes. The parent waits in a blocking ``MPI_Barrier`` (MPICH 5.0's ``MPI_Ibarrier`` on an
intercommunicator never completes), which spins the task's first rank and which no walltime
interrupts: launcher mode has neither limit. What the children print goes to the pool's
output, not to the task; ``returncode`` is 0 once they reached the barrier. An MPI library or
process manager that refuses to spawn fails the task with
:class:`~rankpool.errors.SpawnUnsupported`, which names launcher mode as the alternative; so
does a Hydra pool where the children would be exposed to Hydra's process-end notice
(:mod:`.hydra_notice`): they would die of it before ``MPI_Init`` and leave the parent waiting
in ``MPI_Comm_spawn`` for ever. Under Hydra, spawned applications end one at a time on a
node (:mod:`.spawn_endings`).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping

from mpi4py import MPI

from ..apps.run import MpiRun
from ..errors import SpawnUnsupported
from .applications import node_name
from .hydra_notice import hydra_proxy, spawn_refusal
from .spawn_endings import ending_turn, spawned_below, wait_gone

#: what the command line of a spawned application is reported as
SPAWN = "MPI_Comm_spawn"


def spawn(words: list[str], environ: Mapping[str, str]) -> MpiRun:
    """Spawn ``words`` on the task's ranks and wait for the children to disconnect."""
    count = int(os.environ.get("RANKPOOL_NUM_RANKS", "1"))
    nodes = [n for n in os.environ.get("RANKPOOL_MPI_NODELIST", "").split(",") if n]
    per_node = os.environ.get("RANKPOOL_RANKS_PER_NODE", "")
    refusal = spawn_refusal(nodes, node_name())
    if refusal is not None:
        raise SpawnUnsupported(refusal)
    info = MPI.Info.Create()
    hostfile = None
    start = time.monotonic()
    try:
        info.Set("wdir", os.getcwd())
        if len(nodes) == 1:
            info.Set("host", nodes[0])
        elif nodes:
            counts = per_node.split(",") if "," in per_node else [per_node] * len(nodes)
            with tempfile.NamedTemporaryFile("w", suffix=".hosts", delete=False) as f:
                f.writelines(f"{node}:{n}\n" for node, n in zip(nodes, counts))
            hostfile = f.name
            info.Set("hostfile", hostfile)
        try:
            children = MPI.COMM_SELF.Spawn(words[0], words[1:], maxprocs=count, info=info)
        except MPI.Exception as exc:
            library = MPI.Get_library_version().splitlines()[0].strip()
            raise SpawnUnsupported(f"{exc.Get_error_string()}; {library}") from None
        _end(children, hydra_proxy(), count)
    finally:
        info.Free()
        if hostfile is not None:
            os.unlink(hostfile)
    return MpiRun([SPAWN, *words], 0, "", "", time.monotonic() - start)



def _end(children: MPI.Intercomm, proxy: int | None, count: int) -> None:
    """Join the children's final barrier and disconnect; under Hydra in the node's ending
    turn, kept until they are gone (see :mod:`.spawn_endings`)."""
    if proxy is None:
        try:
            children.Barrier()
        finally:
            children.Disconnect()
        return
    with ending_turn(proxy):
        before = spawned_below(proxy)
        try:
            children.Barrier()
        finally:
            children.Disconnect()
        wait_gone(proxy, before, count)
