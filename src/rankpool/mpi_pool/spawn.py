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
in ``MPI_Comm_spawn`` for ever. Under Hydra, a program that ends before ``MPI_Init`` on its
own (an exit, an import error) is seen by a watching thread (:mod:`.spawn_watch`), and the
parent rank, which nothing else can free from the call, ends itself after telling its keeper
why: the task fails with :class:`~rankpool.errors.SpawnedProgramLost` and the pool serves on
without the rank. The same holds under Open MPI for a spawn onto the rank's own node (the
processes are children of its ``prterun`` or ``prted``). Under Hydra, spawned applications
end one at a time on a node (:mod:`.spawn_endings`).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext

from mpi4py import MPI

from ..apps.process_tree import ancestor_named, parent_of
from ..apps.run import MpiRun
from ..errors import SpawnUnsupported
from ..exit_codes import ExitCode
from ..wording import describe_exits
from .hydra_notice import hydra_proxy, spawn_refusal
from .keeper import last_words
from .node_names import node_name
from .spawn_endings import ending_turn, spawned_below, take_ending_turn, wait_gone
from .spawn_watch import Ending, SpawnWatch

log = logging.getLogger(__name__)

#: what the command line of a spawned application is reported as
SPAWN = "MPI_Comm_spawn"
#: Open MPI's processes that start a job's processes on a node, spawned ones included
OPEN_MPI_DAEMONS = ("prterun", "prted")


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
        proxy = hydra_proxy()
        watch = _watch(words[0], count, proxy, nodes)
        try:
            with watch if watch is not None else nullcontext():
                children = MPI.COMM_SELF.Spawn(words[0], words[1:], maxprocs=count, info=info)
        except MPI.Exception as exc:
            library = MPI.Get_library_version().splitlines()[0].strip()
            raise SpawnUnsupported(f"{exc.Get_error_string()}; {library}") from None
        _end(children, proxy, count)
    finally:
        info.Free()
        if hostfile is not None:
            os.unlink(hostfile)
    return MpiRun([SPAWN, *words], 0, "", "", time.monotonic() - start)


def _watch(program: str, count: int, proxy: int | None, nodes: list[str]) -> SpawnWatch | None:
    """The watch over a spawn of ``count`` processes of ``program``: below Hydra's
    ``mpiexec`` (its ``proxy``'s parent), or below Open MPI's daemon on this node when the
    processes all start here; None where they cannot be watched (other nodes, another MPI)."""
    if proxy is not None:
        return SpawnWatch(parent_of(proxy) or proxy, count, _end_this_rank(program, proxy))
    daemon = ancestor_named(OPEN_MPI_DAEMONS)
    if daemon is None or any(node != node_name() for node in nodes):
        return None
    return SpawnWatch(daemon, count, _end_this_rank(program, None), flat=True)


def _end_this_rank(program: str, proxy: int | None) -> Callable[[Ending], None]:
    """What a watch does when the spawned processes of ``program`` all ended before
    ``MPI_Init``: the parent rank waits in ``MPI_Comm_spawn`` for ever, so it tells its keeper
    why (the task's error names the program) and ends, as a rank's death costs its task only;
    under Hydra, in the node's ending turn (its end, released with it, is one Hydra tells
    every group of: see :mod:`.spawn_endings`)."""
    def end(ending: Ending) -> None:
        log.error("the %d processes of %s spawned by this rank (%d of them seen) %s before "
                  "MPI_Init, and MPI_Comm_spawn cannot be interrupted: ending this rank",
                  ending.asked, program, ending.seen, describe_exits(ending.statuses))
        if not last_words({"spawn": {"program": program, "count": ending.asked,
                                     "seen": ending.seen, "statuses": list(ending.statuses)}}):
            log.critical("this rank has no keeper: its end ends the pool")
        if proxy is not None:
            take_ending_turn(proxy)
        logging.shutdown()
        sys.stderr.flush()
        os._exit(ExitCode.SPAWN_LOST)
    return end


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
