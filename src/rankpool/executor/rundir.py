"""Run directories: one per executor, holding its logs and keys."""

from __future__ import annotations

import os

DEFAULT_ROOT = "rankpool-runs"


def make_run_dir(run_dir: str | None = None) -> str:
    """Create and return ``run_dir``, or the next ``rankpool-runs/NNN`` under the working directory."""
    if run_dir:
        os.makedirs(run_dir, exist_ok=True)
        return os.path.abspath(run_dir)
    os.makedirs(DEFAULT_ROOT, exist_ok=True)
    taken = [int(n) for n in os.listdir(DEFAULT_ROOT) if n.isdigit()]
    number = max(taken, default=-1) + 1
    while True:
        path = os.path.join(DEFAULT_ROOT, f"{number:03d}")
        try:
            os.makedirs(path)
            return os.path.abspath(path)
        except FileExistsError:
            number += 1
