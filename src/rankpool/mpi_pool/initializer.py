"""The executor's ``initializer`` on a pool: every worker rank runs it once before serving,
and rank 0 learns which ranks failed and why, so that the front-end can break with that error
(as ``concurrent.futures`` executors do) instead of sending tasks to ranks whose set-up is
missing (see :mod:`rankpool.task.initializer`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from mpi4py import MPI

from ..task.initializer import run_initializer

log = logging.getLogger(__name__)


def initialize(comm: MPI.Intracomm, payload: bytes, workers: Sequence[int]) -> str:
    """Collective over ``comm``: the ranks in ``workers`` run the initializer; on rank 0, the
    first failure as ``"rank R: error"`` ("" when every rank succeeded; elsewhere always "")."""
    if not payload:
        return ""
    rank = comm.Get_rank()
    error = run_initializer(payload) if rank in workers else ""
    if error:
        log.error("rank %d: the initializer failed: %s", rank, error)
    errors = comm.gather(error, root=0)
    if errors is None:
        return ""
    failed = [(r, e) for r, e in enumerate(errors) if e]
    if not failed:
        return ""
    more = f" (and on {len(failed) - 1} more ranks)" if len(failed) > 1 else ""
    return f"the initializer failed on rank {failed[0][0]}: {failed[0][1]}{more}"
