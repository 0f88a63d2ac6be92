"""Every exit status and ``MPI_Abort`` error code rankpool's own processes end with.

A job script, a scheduler's accounting or ``rankpool status`` reads them; they are kept here,
in one place, so that no two meanings share a number.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """How a pool (``python -m rankpool.mpi_pool``) or a ``CommExecutor`` job ends."""

    #: a clean end (stopped, drained, or the interchange went away after serving)
    OK = 0
    #: the interchange refused the pool's registration (versions, shape, initializer)
    REFUSED = 3
    #: ``MPI_Abort`` code of a pool that left with ranks stuck in tasks that never ended
    STUCK = 4
    #: the pool never got an answer from the interchange (address, firewall, keys)
    UNREACHABLE = 5
    #: a worker rank ended itself: the program it spawned ended before ``MPI_Init``, and
    #: ``MPI_Comm_spawn`` would have waited for it for ever
    SPAWN_LOST = 6
    #: ``MPI_Abort`` code of a ``CommExecutor`` left with ranks stuck (``on_stuck="abort"``)
    COMM_STUCK = 70
    #: ``MPI_Abort`` code of a job aborted by a second interrupt (128 + SIGINT, as a shell says)
    FORCED = 130
