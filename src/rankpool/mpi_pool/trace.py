"""Recording where and when tasks ran, on rank 0, for the rank-occupancy trace.

One row per (task, rank): task id, pool rank, task width, start and end (``time.time()`` on
the rank). Rows go into typed arrays (a few bytes each, no object per row) and are written
once, as ``trace-<block>.npz`` in the run directory, when the pool leaves.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Sequence

import numpy as np

from ..private_files import open_private


class TraceRecorder:
    """Columns of the trace of one pool."""

    def __init__(self, hosts_of_ranks: dict[int, str]) -> None:
        self.hosts_of_ranks = hosts_of_ranks
        self.task = array("q")
        self.rank = array("l")
        self.width = array("l")
        self.start = array("d")
        self.end = array("d")

    def add(self, task_id: int, ranks: Sequence[int], start: float, end: float) -> None:
        width = len(ranks)
        for rank in ranks:
            self.task.append(task_id)
            self.rank.append(rank)
            self.width.append(width)
            self.start.append(start)
            self.end.append(end)

    def __len__(self) -> int:
        return len(self.task)

    def write(self, run_dir: str, block_id: str) -> str:
        """Write the trace next to the pool's log; return its path."""
        path = os.path.join(run_dir, f"trace-{block_id}.npz")
        ranks = sorted(self.hosts_of_ranks)
        with os.fdopen(open_private(path, append=False), "wb") as fh:  # 0600, no link followed
            np.savez(fh, task=np.asarray(self.task), rank=np.asarray(self.rank),
                     width=np.asarray(self.width), start=np.asarray(self.start),
                     end=np.asarray(self.end), block=np.asarray(block_id),
                     host_ranks=np.asarray(ranks),
                     hosts=np.asarray([self.hosts_of_ranks[r] for r in ranks]))
        return path
