"""A pool that cannot reach its interchange gives up within its heartbeat threshold and says why.

Run as a job script would run it (``mpiexec -n 2 python -m rankpool.mpi_pool ...`` and
``rankpool pool ...``), pointed at a loopback port nobody listens on.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rankpool.exit_codes import ExitCode
from rankpool.launchers.failed_starts import diagnose
from rankpool.launchers.mpiexec import find_mpiexec
from rankpool.protocol.starts import StartCause, pool_record_path

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(120)]


def closed_port() -> int:
    """A loopback port that was free a moment ago (nothing listens on it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("entry", [["-m", "rankpool.mpi_pool"], ["-m", "rankpool.cli", "pool"]])
def test_pool_without_interchange_exits_naming_address_and_time(tmp_path: Path,
                                                                entry: list[str]) -> None:
    address = f"tcp://127.0.0.1:{closed_port()}"
    cmd = [find_mpiexec(), "-n", "2", sys.executable, *entry, "--interchange", address,
           "--block-id", "7", "--heartbeat-period", "0.5", "--heartbeat-threshold", "2",
           "--run-dir", str(tmp_path)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - t0
    assert proc.returncode == ExitCode.UNREACHABLE, (proc.stdout, proc.stderr)
    assert 2 <= elapsed < 30
    said = f"no answer from the interchange at {address} for 2 s"
    assert said in proc.stderr
    assert said in (tmp_path / "pool-7.log").read_text()
    record = json.loads(Path(pool_record_path(str(tmp_path), "7")).read_text())
    assert record["cause"] == "UNREACHABLE" and said in record["detail"]
    # what the executor makes of the block once its job has ended
    failure = diagnose("7", "", run_dir=str(tmp_path), state="COMPLETED", exit_code=5)
    assert failure.cause is StartCause.UNREACHABLE
    assert said in failure.message() and "exit code 5" in failure.summary()
