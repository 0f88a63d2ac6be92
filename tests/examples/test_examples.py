"""Every script in examples/ run for real, as a user would, with small sizes and a timeout.

Each runs in its own temporary directory (the run directories and output files land there)
and is judged by what it prints. The site_*.py examples need a batch system; they are built,
not run, in tests/unit/test_provider_scripts.py.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rankpool.launchers.mpiexec import find_mpiexec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(150)]


def run(tmp_path: Path, script: str, *args: str, ranks: int | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<script>`` (under ``mpiexec -n ranks`` if given) and require success."""
    cmd = [sys.executable, str(EXAMPLES / script), *args]
    if ranks is not None:
        cmd = [find_mpiexec(), "-n", str(ranks), *cmd]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert proc.returncode == 0, (f"{' '.join(cmd)} exited {proc.returncode}\n"
                                  f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def numbers(pattern: str, text: str) -> list[float]:
    return [float(m) for m in re.findall(pattern, text)]


def test_quickstart(tmp_path):
    proc = run(tmp_path, "quickstart.py", "--samples", "20000")
    out = proc.stdout
    assert "summary: 20 tasks (16 of 1 rank, 4 of 4 ranks): 20 done, 0 failed" in out
    (mc,) = numbers(r"Monte Carlo, 16 tasks of 1 rank: pi ~ ([\d.]+)", out)
    assert abs(mc - math.pi) < 0.05
    midpoint = numbers(r"intervals on 4 ranks: pi ~ ([\d.]+)", out)
    assert len(midpoint) == 4 and all(abs(v - math.pi) < 1e-8 for v in midpoint)
    # the progress bar: occasional lines on stderr (not a terminal here), the last one complete
    progress = [line for line in proc.stderr.splitlines() if line.startswith("tasks: ")]
    assert progress and progress[-1].startswith("tasks: 20/20, 20 done, 0 failed (100%")
    logs = {p.name for p in tmp_path.glob("runinfo/*/xs/*.log")}
    assert {"interchange.log", "pool-0.log"} <= logs


def test_comm_allreduce(tmp_path):
    out = run(tmp_path, "comm_allreduce.py").stdout
    (worst,) = numbers(r"largest relative difference from serial: ([\d.e+-]+)", out)
    assert worst < 1e-12
    ranks = re.findall(r"rank (\d) of 4 holds sum of squares ([\d.]+)", out)
    assert [r for r, _ in ranks] == ["0", "1", "2", "3"] and len({s for _, s in ranks}) == 1


def test_stencil(tmp_path):
    out = run(tmp_path, "stencil.py", "--size", "42", "--steps", "20").stdout   # uneven strips
    assert "42x42 grid, 20 steps on 4 ranks" in out
    assert "largest difference from the serial computation: 0.0e+00" in out


def test_asyncio_executor(tmp_path):
    out = run(tmp_path, "asyncio_executor.py").stdout
    cases = re.findall(r"case (\d): sum of 1/k\^2 over (\d+) terms on 2 ranks = ([\d.]+)", out)
    assert sorted(c for c, _, _ in cases) == ["0", "1", "2", "3"]
    for _, terms, total in cases:
        assert abs(float(total) - math.pi ** 2 / 6) < 1.5 / int(terms)
    (ticks,) = numbers(r"the event loop ticked (\d+) times", out)
    assert ticks > 5


def test_comm_executor(tmp_path):
    out = run(tmp_path, "comm_executor.py", ranks=5).stdout
    assert "squares: [0, 1, 4, 9, 16, 25, 36, 49]" in out
    assert "sim: allreduce over 4 ranks = 4" in out


def test_simulation_driver(tmp_path):
    import h5py

    out = run(tmp_path, "simulation_driver.py", "--out", "sim.h5", "--points", "512",
              "--steps", "60", "--every", "20", ranks=8).stdout
    assert "wrote sim.h5: 4 snapshots, simulation on 4 ranks, analysis on 4" in out
    assert "diffusion smoothed the field: True" in out
    with h5py.File(tmp_path / "sim.h5", "r") as h5:
        assert list(h5["step"][:]) == [0, 20, 40, 60]
        assert h5["field"].shape == (4, 512) and h5["spectrum"].shape == (4, 257)
        field, mean, var = h5["field"][:], h5["mean"][:], h5["variance"][:]
        assert abs(mean - field.mean(axis=1)).max() < 1e-12       # the 2-rank moments task
        assert abs(var - field.var(axis=1)).max() < 1e-12
        assert (h5["min"][:] == field.min(axis=1)).all() \
            and (h5["max"][:] == field.max(axis=1)).all()
        assert h5.attrs["simulation_ranks"] == 4
