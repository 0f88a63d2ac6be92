"""Run the attacker (``attacker.py``) against a run, and what a refused attack looks like.

Shared by the attack tests of every front-end; also the task functions their pools import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

NOBODY = 65534
ATTACKER = Path(__file__).resolve().parent / "attacker.py"

as_root = pytest.mark.skipif(
    not hasattr(os, "getuid") or os.getuid() != 0,
    reason="the attacker becomes another user (nobody) with os.setuid, which needs root; CI "
           "runs the suite as root")


# -- tasks --------------------------------------------------------------------------------------
def square(x: int) -> int:
    return x * x


def slow_square(x: int, seconds: float = 0.05) -> int:
    time.sleep(seconds)
    return x * x


def total(array: Any) -> int:
    return int(array.sum())


# -- the attack ---------------------------------------------------------------------------------
def run_files(run_dir: Path) -> list[str]:
    """The run directory, its keys and every file in it (what the attacker tries to read)."""
    found = [str(run_dir)]
    for root, dirs, files in os.walk(run_dir):
        found += [os.path.join(root, n) for n in sorted(dirs) + sorted(files)]
    return found


def attack(run_dir: Path, ports: dict[str, int], pool_id: str, shm_prefix: str,
           marker: Path) -> dict[str, Any]:
    """Run the attacker as nobody against a run; its report (see :mod:`attacker`)."""
    plan = {"run_dir": str(run_dir), "ports": ports, "pool_id": pool_id,
            "shm_prefix": shm_prefix, "marker": str(marker), "paths": run_files(run_dir)}
    proc = subprocess.run([sys.executable, str(ATTACKER)], input=json.dumps(plan),
                          capture_output=True, text=True, timeout=120, cwd="/",
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in report, report["error"]
    return report


def assert_refused(report: dict[str, Any], marker: Path) -> None:
    """Every attempt of the report failed, and no payload of the attacker's ran here."""
    assert report["uid"] == NOBODY
    answered = {what: got for what, got in report["network"].items() if got}
    assert not answered, f"the interchange answered the attacker: {answered}"
    assert not marker.exists(), "an attacker's pickle was unpickled by the run"
    readable = {p: how for p, how in report["files"].items() if how != "PermissionError"}
    assert not readable, f"the attacker could read: {readable}"
    assert report["shm"], "the run had no shared-memory segment to attack"
    assert set(report["shm"].values()) == {"PermissionError"}, report["shm"]
    assert report["doorbells"] > 0, "the attacker found no doorbell to ring"
    code, err = report["status"]
    assert code != 0 and "only its owner may enter it" in err and "uid 65534" in err, err


def assert_refusals_logged(log: str) -> None:
    """The interchange's log names a refused connection on each of its three ports."""
    for port in ("pool", "front-end", "command"):
        assert f"on the {port} port" in log and "refused a connection" in log, \
            f"no refusal on the {port} port logged:\n{log[-3000:]}"


def wait_logged(path: Path, text: str, timeout: float = 30.0) -> str:
    """The contents of ``path`` once they include ``text``."""
    from waiting import wait_for
    return wait_for(lambda: text in (s := _read(path)) and s, timeout=timeout)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
