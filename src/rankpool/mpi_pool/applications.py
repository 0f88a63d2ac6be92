"""MPI application tasks: one function call on the first of a task's ranks, the rest held.

A task on N ranks whose function cannot take a communicator (no ``comm`` parameter, no
``None`` first argument: a Parsl bash app, :func:`rankpool.run_mpi`, any plain function) is an
*application task*: its ranks are placed as for a ``comm`` task, the function runs once on
the task's rank 0 with a launch prefix naming exactly the held ranks' hosts (see
:mod:`rankpool.apps.prefix`), and the other ranks wait in a non-blocking barrier until it
returns, with no MPI busy wait: a held rank with a doorbell (see :mod:`.doorbell`) sleeps on
it until the task's rank 0 rings it, when the function is over, and only then polls the
barrier; one without sleeps a growing time between tests. Waking a held rank hundreds of times
a second would take that time from the application's own processes. While the function runs,
the pool's own launcher variables (PMI, Slurm step, ...) are out of the environment, so a
launcher it starts begins a job of its own. Every process the function left behind is ended
when it returns or is interrupted (walltime). A rank that dies while an application runs takes
the application with it through its launcher: Hydra's proxy ends the dead rank's process group
(the ranks are session leaders), with or without ``-disable-auto-cleanup``, and Slurm ends
every process of a step.
Held ranks on the first rank's node also watch its process and come back when it dies (the
barrier they wait in would never complete; the pool counts the task as lost with the rank);
held ranks elsewhere are ended by rank 0 after its grace period.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

from mpi4py import MPI

from ..apps.prefix import compose, detect_family, hosts_with_counts, pool_launch_variables
from ..apps.process_tree import adopt_orphans, descendants, end_processes, exit_status, reap
from .backoff import Backoff, BackoffConfig
from .doorbell import Doorbell
from .mpich_files import sweep as sweep_mpich_files
from .node_names import node_name
from .task_setting import TaskSetting, environment

log = logging.getLogger(__name__)

#: how held ranks sleep between tests of the barrier: 0.1 ms growing to 2 ms
HOLD_BACKOFF = BackoffConfig(base=100e-6, hot_cap=2e-3, idle_cap=2e-3, hot_window=1e-6)
#: seconds a held rank with a doorbell sleeps on it before it tests the barrier anyway (a ring
#: that never comes, from a task rank 0 without a bell, costs at most this)
HOLD_ON_BELL = 0.1
#: seconds between looks of a held rank at its first rank's process
FIRST_RANK_LOOK = 0.05
#: barriers of held ranks whose first rank died: never complete, never freed (an active
#: request must not be freed)
_abandoned: list[MPI.Request] = []


def marked_application(fn: Callable[..., Any]) -> bool:
    """Whether a function always runs as an application task (``run_mpi``, or a function
    wrapping it)."""
    return bool(getattr(fn, "rankpool_application", False) or
                getattr(getattr(fn, "__wrapped__", None), "rankpool_application", False))


def is_application(marked: bool, position: int | None, args: Sequence[Any],
                   size: int, setting: TaskSetting | None) -> bool:
    """Whether a task runs as an application task (``marked``: its function is one, see
    :func:`marked_application`; ``position``: where ``comm`` goes).

    A 1-rank task is one when its function is ``run_mpi``, or when it cannot take a
    communicator and its specification names an MPI shape or launch key (``num_nodes``,
    ``ranks_per_node``, ``launcher_options``, ``mpi_launcher``), as Parsl's MPI mode gives a
    1-rank bash app its prefix."""
    if marked:
        return True
    if position is not None or (args and args[0] is None):
        return False
    return size > 1 or (setting is not None and bool(
        setting.shaped or setting.launcher_options or setting.mpi_launcher))


class Applications:
    """A worker rank's side of application tasks."""

    def __init__(self, node_names: Sequence[str] | None = None, bell: Doorbell | None = None,
                 belled: Collection[int] = (), pids: Sequence[int] | None = None) -> None:
        """``node_names``: the node of every rank of the pool (None: each task asks its
        ranks, a collective at its start); ``bell``: this rank's doorbell, ``belled``: the pool
        ranks that have one (all on one host); ``pids``: every rank's process id."""
        self.node_names = node_names
        self.bell = bell
        self.belled = belled if bell is not None else ()
        self.pids = pids
        self.family = detect_family(os.environ)
        if not adopt_orphans():
            log.warning("cannot adopt orphaned processes: a process an application task "
                        "leaves behind after its parent ended may outlive the task")

    def run(self, sub: MPI.Intracomm, setting: TaskSetting | None,
            call: Callable[[], Any], ranks: Sequence[int] = (), task_id: int = 0) -> Any:
        """Run ``call`` on rank 0 of ``sub`` in the application's environment, hold the
        others; every rank returns when ``call`` is over (None on the held ranks). ``ranks``:
        the pool ranks ``sub`` is made of, in its order; ``task_id``: the task's, which the
        rings that end the hold say."""
        size = sub.Get_size()
        if size == 1:
            names = [node_name()]
        elif self.node_names is not None and len(ranks) == size:
            names = [self.node_names[r] for r in ranks]  # no collective (which spins) at start
        else:
            names = sub.allgather(node_name())
        belled = self.belled
        note = b"over %d" % task_id
        if sub.Get_rank() != 0:
            near = self.pids is not None and len(ranks) == size and names[0] == node_name()
            first = self.pids[ranks[0]] if near and self.pids is not None else None
            _hold(sub, self.bell if ranks and ranks[0] in belled else None, note, first)
            return None
        try:
            family = (setting.mpi_launcher if setting else None) or self.family
            variables = compose(family, hosts_with_counts(names),
                                setting.launcher_options if setting else "")
            return self._run_here(variables, call)
        finally:
            if size > 1:
                request = sub.Ibarrier()
                bell = self.bell
                if bell is not None:  # (belled is empty without it)
                    for rank in ranks[1:]:
                        if rank in belled:
                            bell.ring(rank, note)
                request.Wait()  # the held ranks wait in it already: no spin here

    def _run_here(self, variables: dict[str, str], call: Callable[[], Any]) -> Any:
        start = time.time()
        try:
            with environment(variables.items(), remove=pool_launch_variables(os.environ)):
                return call()
        finally:
            end_processes(descendants(os.getpid()))
            reap()
            for path in sweep_mpich_files(start):
                log.info("removed %s: the application's ranks ended without MPI_Finalize", path)


def _hold(sub: MPI.Intracomm, bell: Doorbell | None, note: bytes, first: int | None) -> None:
    """Wait for rank 0 of ``sub`` to finish, sleeping between tests (MPICH's blocking waits
    spin at full CPU); on ``bell`` until rank 0 rings it with ``note``, when there is one; or
    for its process ``first`` (on this node; None: elsewhere) to end."""
    request = sub.Ibarrier()
    look = time.monotonic() + FIRST_RANK_LOOK
    if bell is not None:
        while not request.Test():
            if bell.wait_for(note, HOLD_ON_BELL):
                break  # over: the barrier completes after a few tests
            if _first_died(first, request):
                return
    backoff = Backoff(HOLD_BACKOFF)
    while not request.Test():
        time.sleep(backoff.next_delay())
        if first is not None and time.monotonic() > look:
            look = time.monotonic() + FIRST_RANK_LOOK
            if _first_died(first, request):
                return


def _first_died(first: int | None, request: MPI.Request) -> bool:
    """Whether the held task's first rank, process ``first`` on this node, died: then its
    barrier ``request`` will never complete, and is kept (an active request is never freed)."""
    if first is None or not exit_status(first)[0]:
        return False
    log.warning("the first rank of this application task (pid %d) died: this held rank "
                "leaves the task", first)
    _abandoned.append(request)
    return True
