"""Attacks by another user of the machine (``nobody``) on running rankpool runs.

The pools import this directory's task functions by reference, so it is put on ``PYTHONPATH``
before any pool starts. Run dirs live under a directory every user may traverse, so that
only rankpool's own permissions stand between the attacker and the run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from dataflow import load  # noqa: F401  (the shared fixture, for test_attack_parsl)

HERE = Path(__file__).resolve().parent
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH"))
                                           if p)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A fresh directory (mode 0755) under /tmp: others may enter it, unlike pytest's tmp_path
    (under a 0700 directory of root's), so the run's own modes are what is tested."""
    path = Path(tempfile.mkdtemp(prefix="rankpool-attacked-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
