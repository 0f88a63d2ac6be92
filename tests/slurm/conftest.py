"""Fixtures for tests/slurm: skip without a Slurm cluster, clean up its jobs, load Parsl.

The tests need the one-machine Slurm that ``ci/slurm.sh start`` runs (``ci/test.sh`` starts
it) and ``SLURM_CONF`` pointing to its configuration; without them every test here is
skipped, with the reason. The ranks import :mod:`slurm_apps` from this directory: it is put on
``PYTHONPATH`` here, and ``sbatch`` passes the environment on to the jobs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import slurm_helpers
from dataflow import load  # noqa: F401  (the shared fixture)
from waiting import wait_for

HERE = Path(__file__).resolve().parent
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH"))
                                           if p)
_BIN = os.path.dirname(sys.executable)  # jobs must find this Python's mpiexec and rankpool
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = os.pathsep.join((_BIN, os.environ.get("PATH", "")))

_PROBLEM: list[str] = []


@pytest.fixture(autouse=True)
def slurm() -> Iterator[None]:
    """Skip without Slurm; afterwards cancel this test's leftover jobs and wait until they end."""
    if not _PROBLEM:
        _PROBLEM.append(slurm_helpers.slurm_problem())
    if _PROBLEM[0]:
        pytest.skip(_PROBLEM[0])
    wait_for(lambda: not slurm_helpers.our_jobs(), timeout=30)  # an earlier test's jobs ending
    yield
    slurm_helpers.cancel_ours()
    wait_for(lambda: not slurm_helpers.our_jobs(), timeout=30)
