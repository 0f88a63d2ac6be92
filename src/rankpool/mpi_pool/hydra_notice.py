"""Hydra's process-end notice, and why spawned processes must not die of it.

Under ``mpiexec -disable-auto-cleanup`` (how rankpool starts a pool, so that it survives a
rank's death) Hydra tells every process of every process group that some process ended: each
time any process of the job exits, even normally, ``mpiexec`` has every other proxy send
``SIGUSR1`` to its processes. MPICH installs a handler in ``MPI_Init``; a process that has not
reached it yet dies of the signal (its default action). ``MPI_Comm_spawn`` starts its children
in a process group of the same job, so when one spawned application ends (or a pool rank dies)
while another one's processes are still starting, those die silently before they connect to
their parent, and the parent waits in ``MPI_Comm_spawn`` for ever (MPICH gives it no timeout).

The cure has no window: a blocked signal stays blocked across ``fork`` and ``exec``, and Hydra
resets the handlers of the processes it starts but not their signal mask. A local block's
``mpiexec`` is started with the notice blocked (:func:`blocked`), so every proxy it forks and
every process those start, spawned ones included, begins with it blocked (pending, harmless);
the pool's own processes unblock it first thing (:func:`unblock`) and keep MPICH's handling of
it. Processes Hydra starts through its bootstrap (``ssh``, ``srun``: other nodes) get a fresh
mask, so spawn mode under Hydra is allowed only onto this node of a pool whose proxy has the
notice blocked (:func:`spawn_refusal`).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterable

from ..apps.process_tree import ancestor_named

#: the signal Hydra sends when a process of the job ends (auto-cleanup disabled)
NOTICE = signal.SIGUSR1
#: the process Hydra starts on each node, parent of the ranks there
PROXY = "hydra_pmi_proxy"

_BLOCK_AND_EXEC = ("import os, signal, sys; "
                   f"signal.pthread_sigmask(signal.SIG_BLOCK, [{int(NOTICE)}]); "
                   "os.execvp(sys.argv[1], sys.argv[1:])")


def blocked(argv: list[str], python: str | None = None) -> list[str]:
    """``argv`` run with :data:`NOTICE` blocked (a Python that blocks it, then ``exec``)."""
    return [python or sys.executable, "-c", _BLOCK_AND_EXEC, *argv]


def unblock() -> None:
    """Let this process receive :data:`NOTICE` again (a pool process, before MPI starts)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [NOTICE])


def notice_blocked(pid: int) -> bool:
    """Whether process ``pid`` has :data:`NOTICE` blocked (False where it cannot be read)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigBlk:"):
                    return bool(int(line.split()[1], 16) >> (int(NOTICE) - 1) & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def hydra_proxy(pid: int | None = None) -> int | None:
    """The nearest ancestor of ``pid`` (default: this process) that is Hydra's proxy."""
    return ancestor_named((PROXY,), pid)


def spawn_refusal(hosts: Iterable[str], here: str) -> str | None:
    """Why ``MPI_Comm_spawn`` onto ``hosts`` from this rank (on node ``here``) would leave its
    children to die of Hydra's notice, or None where it is safe (or not Hydra's to judge)."""
    proxy = hydra_proxy()
    if proxy is None:
        return None
    if not notice_blocked(proxy):
        return ("this pool's Hydra mpiexec was not started with SIGUSR1 blocked: it sends "
                "SIGUSR1 to every process whenever one ends (-disable-auto-cleanup), which "
                "kills spawned processes before MPI_Init and leaves MPI_Comm_spawn waiting for "
                "ever; pools started by rankpool's local launcher block it")
    elsewhere = sorted({h for h in hosts if h != here})
    if elsewhere:
        return (f"Hydra starts spawned processes on other nodes ({', '.join(elsewhere)}) "
                f"without the SIGUSR1 block that keeps them alive; spawn mode under Hydra "
                f"runs on the spawning rank's node ({here}) only")
    return None
