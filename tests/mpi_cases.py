"""Cases that run under a real ``mpiexec``, written in the test file beside their assertions.

A test module holds both sides. Its ``case_NAME(ex)`` functions run on rank 0 inside
``with CommExecutor(MPI.COMM_WORLD, root=0, ...)`` while the other ranks serve, and a
``main_NAME()`` runs on every rank instead where a case needs more than that; either notes what
it saw with :func:`record`. The module ends with ``if __name__ == "__main__": serve(globals())``,
and its tests call :func:`run_case`, which starts ``mpiexec -n N python THE_MODULE NAME`` and
returns what rank 0 recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: the file :func:`record` appends to, named by :func:`run_case`
CASE_OUT = "RANKPOOL_CASE_OUT"


def record(key: str, value: Any) -> None:
    """Note ``value`` (JSON) under ``key`` for the test; only rank 0 of ``COMM_WORLD`` writes.

    One line per call, written at once: what a case recorded survives an abort of its job."""
    from mpi4py import MPI
    if MPI.COMM_WORLD.Get_rank() == 0:
        with open(os.environ[CASE_OUT], "a") as out:
            out.write(json.dumps([key, value]) + "\n")


def serve(cases: Mapping[str, Any], **options: Any) -> None:
    """Run the case named by ``sys.argv[1]``: ``main_NAME()`` of ``cases`` (a module's globals)
    when there is one, else ``case_NAME(ex)`` on rank 0 inside a ``CommExecutor`` over
    ``COMM_WORLD`` built with ``options``."""
    from mpi4py import MPI

    from rankpool import CommExecutor
    name = sys.argv[1]
    special = cases.get(f"main_{name}")
    if special is not None:
        special()
        return
    with CommExecutor(MPI.COMM_WORLD, root=0, **options) as ex:
        if ex is not None:
            cases[f"case_{name}"](ex)


@dataclass
class CaseRun:
    """A finished ``mpiexec`` run of one case: its process, and what rank 0 recorded."""

    proc: subprocess.CompletedProcess[str]
    records: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        if key not in self.records:
            raise AssertionError(f"nothing recorded as {key!r}; exit {self.proc.returncode}\n"
                                 f"stdout:\n{self.proc.stdout}\nstderr:\n{self.proc.stderr}")
        return self.records[key]


def run_case(module: str | Path, name: str, n: int, tmp_path: Path, timeout: float = 90,
             check: bool = True) -> CaseRun:
    """``mpiexec -n n python module name``, in ``tmp_path`` (``CASE_DIR`` for the case to use);
    with ``check``, the run must exit 0."""
    from rankpool.launchers.mpiexec import find_mpiexec
    out = tmp_path / "records.jsonl"
    env = {**os.environ, CASE_OUT: str(out), "CASE_DIR": str(tmp_path)}
    proc = subprocess.run([find_mpiexec(), "-n", str(n), sys.executable, str(module), name],
                          capture_output=True, text=True, timeout=timeout, env=env)
    if check:
        assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    records = {}
    if out.exists():
        for line in out.read_text().splitlines():
            key, value = json.loads(line)
            records[key] = value
    return CaseRun(proc, records)
