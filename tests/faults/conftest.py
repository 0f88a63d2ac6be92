"""Setup shared by the fault tests: the integration helpers, and a path the ranks import from.

The worker ranks unpickle task functions by reference, so :mod:`fault_tasks` must be
importable in the pools: this directory goes on ``PYTHONPATH`` before any pool starts (pools
inherit it). The process helpers (``executor``, ``pool_tree``, ``wait_gone``, ...) are the
integration tier's, in ``tests/integration/helpers.py``; they are reused, not copied.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
INTEGRATION = HERE.parent / "integration"

for _path in (str(HERE), str(INTEGRATION)):
    if _path not in sys.path:
        sys.path.insert(0, _path)
    if _path not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (_path, os.environ.get("PYTHONPATH")) if p)
