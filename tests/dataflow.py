"""The ``load`` fixture shared by the test directories that run a real DataFlowKernel."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import parsl
import pytest
from parsl.logconfigs.file import FileLogging


@pytest.fixture
def load(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``load(*executors, **config)``: a loaded DataFlowKernel, cleaned up after the test."""
    loaded: list[Any] = []

    def _load(*executors: Any, **config: Any) -> Any:
        config.setdefault("run_dir", str(tmp_path / "runinfo"))
        config.setdefault("initialize_logging", FileLogging(level=logging.INFO))
        config.setdefault("strategy_period", 0.5)
        dfk = parsl.load(parsl.Config(executors=list(executors), **config))
        loaded.append(dfk)
        return dfk

    yield _load
    for dfk in loaded:
        if not dfk.cleanup_called:
            dfk.cleanup()
    parsl.clear()
