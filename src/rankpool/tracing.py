"""Rank-occupancy traces: from the pools' ``trace-<block>.npz`` files to HDF5 and a picture.

``rankpool trace RUN_DIR`` writes ``RUN_DIR/trace.h5`` (one group per block: datasets
``task``, ``rank``, ``width``, ``start``, ``end`` and the rank-to-host map) and draws
``RUN_DIR/trace.png``: one row per rank, one bar per task, coloured by task width, so idle
ranks and fragmentation show at a glance. Utilisation (busy rank-seconds over ranks times
makespan) is printed and stored as an attribute.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Any

import numpy as np


class NoTrace(FileNotFoundError):
    """The run directory holds no trace (was the executor started with ``trace=True``?)."""


@dataclass
class BlockTrace:
    block: str
    task: np.ndarray
    rank: np.ndarray
    width: np.ndarray
    start: np.ndarray
    end: np.ndarray
    host_ranks: np.ndarray
    hosts: np.ndarray

    @property
    def ranks(self) -> int:
        """Worker ranks of the block (rank 0, the manager, runs no task)."""
        return max(int(len(self.host_ranks)) - 1, 1)


def load(run_dir: str) -> list[BlockTrace]:
    paths = sorted(glob.glob(os.path.join(run_dir, "trace-*.npz")))
    if not paths:
        raise NoTrace(f"no trace-*.npz in {run_dir}: start the executor with trace=True "
                      "(pools write their trace when they leave)")
    traces = []
    for path in paths:
        with np.load(path) as z:
            traces.append(BlockTrace(str(z["block"]), z["task"], z["rank"], z["width"],
                                     z["start"], z["end"], z["host_ranks"], z["hosts"]))
    return traces


def utilisation(traces: list[BlockTrace]) -> float:
    """Busy rank-seconds / (worker ranks x makespan), over every block together."""
    starts = [t.start.min() for t in traces if len(t.start)]
    if not starts:
        return 0.0
    makespan = max(t.end.max() for t in traces if len(t.end)) - min(starts)
    busy = sum(float((t.end - t.start).sum()) for t in traces)
    ranks = sum(t.ranks for t in traces)
    return busy / (ranks * makespan) if makespan > 0 else 0.0


def write_hdf5(traces: list[BlockTrace], path: str) -> None:
    import h5py
    with h5py.File(path, "w") as h5:
        h5.attrs["utilisation"] = utilisation(traces)
        for t in traces:
            group = h5.create_group(f"block-{t.block}")
            for name in ("task", "rank", "width", "start", "end", "host_ranks"):
                group.create_dataset(name, data=getattr(t, name))
            group.create_dataset("hosts", data=np.asarray(t.hosts, dtype="S"))


def plot(traces: list[BlockTrace], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import BoundaryNorm

    t0 = min((t.start.min() for t in traces if len(t.start)), default=0.0)
    rows: dict[tuple[str, int], int] = {}
    for t in traces:
        for r in t.host_ranks:
            if r != 0:
                rows[(t.block, int(r))] = len(rows)
    widths = np.concatenate([t.width for t in traces]) if traces else np.array([1])
    top = int(widths.max()) if len(widths) else 1
    cmap = plt.get_cmap("viridis", top)
    norm = BoundaryNorm(np.arange(0.5, top + 1.5), cmap.N)
    fig, ax = plt.subplots(figsize=(10, max(2.5, 0.3 * len(rows) + 1.5)))
    for t in traces:
        y = np.array([rows[(t.block, int(r))] for r in t.rank])
        ax.barh(y, t.end - t.start, left=t.start - t0, height=0.8, color=cmap(norm(t.width)),
                linewidth=0)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"block {b} rank {r}" for b, r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first task started")
    ax.set_title(f"rank occupancy (utilisation {100 * utilisation(traces):.0f} %)")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=norm)
    fig.colorbar(sm, ax=ax, ticks=range(1, top + 1), label="task width (ranks)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def trace_run(run_dir: str) -> dict[str, Any]:
    """Write ``trace.h5`` and ``trace.png`` into ``run_dir``; return what was written."""
    traces = load(run_dir)
    h5 = os.path.join(run_dir, "trace.h5")
    png = os.path.join(run_dir, "trace.png")
    write_hdf5(traces, h5)
    plot(traces, png)
    return {"hdf5": h5, "png": png, "blocks": len(traces),
            "rows": sum(len(t.task) for t in traces), "utilisation": utilisation(traces)}
