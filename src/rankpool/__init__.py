"""rankpool: an MPI-native extreme-scale executor for Python.

Front-ends (imported lazily, so that ``import rankpool`` never initialises MPI):

- :class:`CommExecutor` for programs already running under ``mpiexec``;
- :class:`Executor`, a ``concurrent.futures`` executor over MPI pools;
- :class:`ExtremeScaleExecutor`, the Parsl executor.
"""

from __future__ import annotations

from typing import Any

from ._lazy import load
from ._version import __version__
from .errors import (
    ApplicationError,
    ApplicationSetupError,
    BlockStartFailed,
    BrokenPool,
    EncryptionUnavailable,
    ExecutorShutdown,
    InsufficientRanks,
    KeyFileError,
    ManagerLost,
    RankPoolError,
    RemoteTaskError,
    ResourceSpecError,
    SerializationError,
    SharedMemoryError,
    SpawnedProgramLost,
    SpawnUnsupported,
    StuckRanksError,
    TaskExit,
    TaskSetupError,
    TaskTimeout,
    VersionMismatch,
    WorkerLost,
)

_LAZY = {
    "CommExecutor": "rankpool.frontends.comm_executor",
    "Executor": "rankpool.frontends.executor",
    "ExtremeScaleExecutor": "rankpool.frontends.parsl.executor",
    "run_mpi": "rankpool.apps.run",
    "MpiRun": "rankpool.apps.run",
}

__all__ = ["CommExecutor", "Executor", "ExtremeScaleExecutor", "__version__", "run_mpi", "MpiRun",
           "ApplicationError", "ApplicationSetupError", "SpawnUnsupported", "SpawnedProgramLost",
           "BlockStartFailed",
           "BrokenPool", "EncryptionUnavailable", "ExecutorShutdown", "InsufficientRanks",
           "KeyFileError", "ManagerLost", "RankPoolError", "RemoteTaskError", "ResourceSpecError",
           "TaskSetupError", "SerializationError", "SharedMemoryError", "StuckRanksError",
           "TaskExit", "TaskTimeout", "VersionMismatch", "WorkerLost"]


def __getattr__(name: str) -> Any:
    return load(__name__, _LAZY, name)
