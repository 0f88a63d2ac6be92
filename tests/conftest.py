"""Shared test helpers: bounded waiting and running MPI programs under a timeout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rankpool.launchers.mpiexec import find_mpiexec

SCRIPTS = Path(__file__).parent / "mpi" / "scripts"

# pools started by tests import the test modules' task functions, which import `waiting`
_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_TESTS, os.environ.get("PYTHONPATH"))
                                               if p)


class MpiRun:
    """Runs ``mpiexec -n N python script args`` and parses the JSON lines it prints."""

    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.proc = proc
        self.records: dict[str, Any] = {}
        for line in proc.stdout.splitlines():
            if line.startswith("RESULT "):
                key, _, value = line[len("RESULT "):].partition(" ")
                self.records[key] = json.loads(value)

    def __getitem__(self, key: str) -> Any:
        if key not in self.records:
            raise AssertionError(f"no result {key!r}; stdout:\n{self.proc.stdout}\nstderr:\n{self.proc.stderr}")
        return self.records[key]


@pytest.fixture
def mpirun() -> Callable[..., MpiRun]:
    def run(script: str, n: int, *args: str, timeout: float = 60, check: bool = True,
            env: dict[str, str] | None = None) -> MpiRun:
        cmd = [find_mpiexec(), "-n", str(n), sys.executable, str(SCRIPTS / script), *args]
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n"
                                 f"{proc.stdout}\nstderr:\n{proc.stderr}")
        return MpiRun(proc)
    return run
