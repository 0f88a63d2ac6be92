"""Telling launchers apart: which start one pool per block, and which one copy per node.

A rankpool block must be ONE MPI application. Parsl's own launchers were made for executors
that start one worker process per node (or per ``tasks_per_node`` slot): given the pool
command they start ``nodes_per_block * tasks_per_node`` copies of it, and since Parsl passes
``tasks_per_node=1`` that is one copy per node (or, for ``SingleNodeLauncher``, all on the
first node). Depending on whether the MPI library finds the launcher's PMI through the
wrapper shell, those copies become separate one-rank pools or one pool with a single rank per
node: never the ``ranks_per_node`` shape the executor promised. The executor uses
:func:`configure_launcher` to refuse them with a clear error unless asked for per-node pools.
"""

from __future__ import annotations

import logging
from enum import Enum

from parsl import launchers as parsl_launchers
from parsl.launchers.base import Launcher

from .template import RankLauncher, check_positive

log = logging.getLogger(__name__)


class LaunchStyle(Enum):
    """What a launcher makes of the pool command."""

    ONE_APPLICATION = "one MPI application of the whole block"
    PER_SLOT = "one copy of the command per node (times tasks_per_node), not one MPI application"
    SINGLE_PROCESS = "the command once, as a single process: a pool with no worker ranks"
    UNKNOWN = "a launcher rankpool does not know; it cannot tell how it starts the command"


#: Parsl's launchers that start one copy per slot: how, and the rankpool launcher to use instead
_PARSL_PER_SLOT: dict[type[Launcher], tuple[str, str]] = {
    parsl_launchers.SrunLauncher: ("srun --ntasks nodes*tasks_per_node of a shell script",
                                   "SrunLauncher"),
    parsl_launchers.SrunMPILauncher: ("one srun per slot", "SrunLauncher"),
    parsl_launchers.MpiExecLauncher: ("mpiexec -n nodes*tasks_per_node of a shell script",
                                      "MpiexecLauncher"),
    parsl_launchers.MpiRunLauncher: ("mpirun -np nodes*tasks_per_node of a shell script",
                                     "MpirunLauncher"),
    parsl_launchers.AprunLauncher: ("aprun -n nodes*tasks_per_node of a shell script",
                                    "AprunLauncher"),
    parsl_launchers.JsrunLauncher: ("jsrun -n nodes*tasks_per_node of a shell script",
                                    "JsrunLauncher"),
    parsl_launchers.SingleNodeLauncher: ("nodes*tasks_per_node background copies on the first "
                                         "node", "MpiexecLauncher"),
    parsl_launchers.GnuParallelLauncher: ("copies over ssh with GNU parallel", "MpiexecLauncher"),
}


def launch_style(launcher: object) -> LaunchStyle:
    """How ``launcher`` starts the pool command."""
    if isinstance(launcher, RankLauncher):
        return LaunchStyle.ONE_APPLICATION
    if any(isinstance(launcher, cls) for cls in _PARSL_PER_SLOT):
        return LaunchStyle.PER_SLOT
    if isinstance(launcher, parsl_launchers.SimpleLauncher):
        return LaunchStyle.SINGLE_PROCESS
    return LaunchStyle.UNKNOWN


def is_per_node_launcher(launcher: object) -> bool:
    """Whether ``launcher`` is one of Parsl's launchers that start a copy of the pool per node."""
    return launch_style(launcher) is LaunchStyle.PER_SLOT


def _parsl_entry(launcher: object) -> tuple[str, str] | None:
    return next((entry for cls, entry in _PARSL_PER_SLOT.items() if isinstance(launcher, cls)),
                None)


def describe(launcher: object) -> str:
    """One sentence on what ``launcher`` would start for a rankpool block, for logs and errors."""
    name = type(launcher).__name__
    style = launch_style(launcher)
    if isinstance(launcher, RankLauncher):
        rpn = launcher.ranks_per_node
        shape = ("ranks_per_node not set yet" if rpn is None else
                 f"nodes_per_block x {rpn} ranks; rank 0, the manager, takes one slot on the "
                 f"first node")
        return f"{launcher.display_name}: {style.value} ({shape})"
    entry = _parsl_entry(launcher)
    if entry is not None:
        how, ours = entry
        return (f"Parsl's {name}: {style.value} ({how}); use rankpool.launchers.{ours} "
                f"for one pool per block")
    if style is LaunchStyle.SINGLE_PROCESS:
        return f"Parsl's {name}: {style.value}; use rankpool.launchers.MpiexecLauncher"
    return f"{name}: {style.value}"


def configure_launcher(launcher: object, *, ranks_per_node: int | None,
                       allow_per_node: bool = False) -> int | None:
    """Make ``launcher`` ready for the executor's blocks; return the block's ranks per node.

    For a rankpool launcher, the executor's ``ranks_per_node`` fills in one the launcher lacks;
    given on both sides they must agree. A launcher that would not start one MPI application
    per block (:func:`describe` says why) is refused unless ``allow_per_node``. A launcher
    rankpool does not know is accepted with a warning: it may wrap ``mpiexec`` itself.
    """
    if ranks_per_node is not None:
        check_positive("ranks_per_node", ranks_per_node)
    style = launch_style(launcher)
    if isinstance(launcher, RankLauncher):
        own = launcher.ranks_per_node
        if own is None and ranks_per_node is None:
            raise ValueError(f"ranks_per_node is not set: give it to the executor or to "
                             f"{type(launcher).__name__}(ranks_per_node=N)")
        if own is not None and ranks_per_node is not None and own != ranks_per_node:
            raise ValueError(f"ranks_per_node={ranks_per_node} disagrees with the launcher's "
                             f"{type(launcher).__name__}(ranks_per_node={own})")
        if own is None:
            launcher.ranks_per_node = ranks_per_node
        return launcher.ranks_per_node
    if style in (LaunchStyle.PER_SLOT, LaunchStyle.SINGLE_PROCESS):
        if not allow_per_node:
            raise ValueError(f"launcher: {describe(launcher)}. A rankpool block is one MPI "
                             f"application; pass a rankpool launcher, or ask for per-node pools "
                             f"explicitly")
        return ranks_per_node
    log.warning("launcher %s: rankpool cannot tell whether it starts one MPI application per "
                "block; make sure it does", describe(launcher))
    return ranks_per_node
