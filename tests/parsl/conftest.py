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
import waiting  # noqa: E402  (tests/, on sys.path through the root conftest)
from dataflow import load  # noqa: F401  (the shared fixture)

HERE = Path(__file__).resolve().parent
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH"))
                                           if p)


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    return waiting.wait_for
