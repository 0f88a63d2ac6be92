"""Fixtures for tests with a real DataFlowKernel over ExtremeScaleExecutor pools.

The worker ranks unpickle the apps by reference, so they import :mod:`xs_apps` from this
directory: it is put on ``PYTHONPATH`` here, before any pool starts, and the pools inherit it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rankpool import ExtremeScaleExecutor
from rankpool.executor.parsl import local_provider

from dataflow import load  # noqa: F401  (the shared fixture)
import waiting  # noqa: E402  (tests/, on sys.path through the root conftest)

HERE = Path(__file__).resolve().parent
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)

#: fast liveness for tests: a killed pool is declared lost within about 3 s
FAST = {"heartbeat_period": 0.5, "heartbeat_threshold": 3.0}


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    return waiting.wait_for


def xs(*, ranks_per_node: int = 2, init_blocks: int = 1, min_blocks: int = 0, max_blocks: int = 1,
       provider: Any = None, **kwargs: Any) -> ExtremeScaleExecutor:
    """An executor of local blocks with test-friendly heartbeats."""
    if provider is None:
        provider = local_provider(init_blocks=init_blocks, min_blocks=min_blocks,
                                  max_blocks=max_blocks)
    kwargs.setdefault("label", "xs")
    return ExtremeScaleExecutor(provider=provider, ranks_per_node=ranks_per_node, **{**FAST, **kwargs})
