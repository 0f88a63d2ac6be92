"""CommExecutor with node resources under a real mpiexec (tests/mpi/scripts/node_cases.py)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(180)]


def test_shared_devices_env_and_cwd_in_a_comm_executor(mpirun):
    run = mpirun("node_cases.py", 4)
    assert run["root_device"] is None                  # root (the manager) owns no device
    assert run["devices"] == [[1, "x"], [2, "x"], [3, "y"]]  # two ranks per device
    assert run["too_wide"] == "gpus_per_rank"
    assert run["during"] is True and run["after"] is True
