"""The ``rankpool`` command: ``info``, ``status`` against a live executor, ``pool``, bad usage.

Also job-script mode's building blocks (:mod:`rankpool.launchers.jobscript`): the pool command, the
``pool_command.sh`` it writes (started here under the bundled ``mpiexec``), and the batch
system detection ``rankpool info`` prints.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from waiting import wait_for

from rankpool import Executor
from rankpool.cli import main
from rankpool.launchers.jobscript import detect_batch, pool_command, write_pool_script
from rankpool.launchers.mpiexec import find_mpiexec
from rankpool.launchers.rundir import INTERCHANGE_INFO, read_interchange_info
from rankpool.mpi_pool.config import PoolConfig

pytestmark = pytest.mark.timeout(60)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- info -----------------------------------------------------------------------------------------
def test_info_prints_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "info")
    assert code == 0
    fields = dict(line.split(":", 1) for line in out.splitlines())
    for name in ("rankpool", "python", "mpi4py", "MPI library", "mpiexec", "batch system",
                 "launcher", "cray"):
        assert fields.get(name, "").strip(), f"no {name!r} in:\n{out}"
    assert "MPI standard" in fields["MPI library"] and "0.1" in fields["rankpool"]


def test_info_runs_as_a_console_script() -> None:
    script = Path(sys.executable).parent / "rankpool"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "rankpool.cli"]
    proc = subprocess.run([*cmd, "info"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "MPI library:" in proc.stdout, proc.stderr


@pytest.mark.parametrize(("env", "paths", "system", "launcher"), [
    ({"SLURM_JOB_ID": "12"}, (), "Slurm", "SrunLauncher"),
    ({"PBS_JOBID": "7.pbs", "PALS_APID": "1", "PE_ENV": "GNU"}, (), "PBS",
     'MpiexecLauncher(flavor="pals"'),
    ({"PBS_JOBID": "7.pbs"}, ("aprun",), "PBS", "AprunLauncher"),
    ({"PBS_JOBID": "7.pbs"}, (), "PBS", "MpiexecLauncher(ranks_per_node"),
    ({"LSB_JOBID": "3"}, ("jsrun",), "LSF", "JsrunLauncher"),
    ({"LSB_JOBID": "3"}, (), "LSF", "MpirunLauncher"),
    ({"FLUX_URI": "local:///x", "SLURM_JOB_ID": "12"}, (), "Flux", "FluxLauncher"),
    ({}, ("qsub",), "PBS", "MpiexecLauncher"),
    ({}, (), "", "none"),
])
def test_detect_batch(env: dict[str, str], paths: tuple[str, ...], system: str,
                      launcher: str) -> None:
    found = detect_batch(env, lambda name: f"/bin/{name}" if name in paths else None)
    assert (found.system, found.launcher.startswith(launcher)) == (system, True), found
    assert found.job_id == env.get("SLURM_JOB_ID", env.get("PBS_JOBID", env.get("LSB_JOBID", ""))) \
        or system == "Flux"
    if "PE_ENV" in env:
        assert "PE_ENV=GNU" in found.cray and "PALS" in found.cray


# -- bad usage ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("argv", "message"), [
    ([], "required: SUBCOMMAND"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["status"], "required: RUN_DIR"),
    (["status", "--interval", "0", "."], "--interval: expected a positive number"),
    (["status", "--timeout", "soon", "."], "--timeout: expected a positive number"),
    (["info", "--bogus"], "unrecognized arguments: --bogus"),
    (["pool", "--block-id", "1"], "--interchange"),
])
def test_bad_arguments_exit_2_with_a_message(capsys: pytest.CaptureFixture[str], argv: list[str],
                                             message: str) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err, err


@pytest.mark.parametrize("argv", [["--help"], ["info", "--help"], ["status", "--help"],
                                  ["pool", "--help"]])
def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "usage:" in out


def test_pool_help_names_the_command_it_was_run_as(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "pool", "--help")
    assert code == 0 and out.startswith("usage: rankpool pool ")


def test_status_refuses_a_directory_that_is_not_a_run_dir(capsys: pytest.CaptureFixture[str],
                                                          tmp_path: Path) -> None:
    code, _, err = run(capsys, "status", "--once", str(tmp_path / "missing"))
    assert code == 2 and "is not a directory" in err
    code, _, err = run(capsys, "status", "--once", str(tmp_path))
    assert code == 2 and f"no {INTERCHANGE_INFO}" in err
    (tmp_path / INTERCHANGE_INFO).write_text("{not json")
    code, _, err = run(capsys, "status", "--once", str(tmp_path))
    assert code == 2 and "is not JSON" in err
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / INTERCHANGE_INFO).write_text("{}")
    (tmp_path / INTERCHANGE_INFO).unlink()
    code, _, err = run(capsys, "status", "--once", str(tmp_path))
    assert code == 2 and "several executors" in err


def _info(path: Path, command_port: int, pid: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / INTERCHANGE_INFO).write_text(json.dumps(
        {"address": "tcp://127.0.0.1:1", "pool_port": 1, "client_port": 2,
         "command_port": command_port, "host": socket.gethostname(), "pid": pid}))


def test_status_says_when_the_executor_is_gone(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait(timeout=30)
    _info(tmp_path, 1, ended.pid)
    code, _, err = run(capsys, "status", "--once", str(tmp_path))
    assert code == 1 and f"(process {ended.pid}) has ended" in err


def test_status_says_when_the_interchange_does_not_answer(capsys: pytest.CaptureFixture[str],
                                                          tmp_path: Path) -> None:
    silent = socket.socket()  # listens, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait(timeout=30)
    runinfo = tmp_path / "runinfo"  # Parsl's layout: runinfo/NNN/<label>
    runinfo.mkdir()
    _info(runinfo / "000", 1, ended.pid)
    try:
        _info(runinfo / "001", silent.getsockname()[1], os.getpid())
        start = time.monotonic()
        # two run dirs below runinfo: the one whose executor is alive is chosen
        code, _, err = run(capsys, "status", "--once", "--timeout", "0.3", str(runinfo))
        assert code == 1 and "did not answer 'pools' within 0.3 s" in err, err
        assert time.monotonic() - start < 10
        _info(runinfo / "002", silent.getsockname()[1], os.getpid())
        code, _, err = run(capsys, "status", "--once", str(runinfo))
        assert code == 2 and "several executors' run directories with a running" in err, err
    finally:
        silent.close()


# -- against a live executor ---------------------------------------------------------------------
@pytest.mark.mpi
def test_status_once_shows_a_live_executors_pool(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    run_dir = tmp_path / "runinfo" / "xs"  # nested, as Parsl's run dirs are
    with Executor(max_ranks=2, run_dir=str(run_dir)) as ex:
        info = read_interchange_info(str(run_dir))
        assert info["command_port"] == ex.client.ports["command_port"]
        assert info["address"] == ex.client.pool_address and info["pid"] == os.getpid()
        wait_for(ex.pools, timeout=30)
        busy = ex.submit(time.sleep, 5)
        wait_for(lambda: ex.pools()[0]["busy_ranks"] == 1, timeout=30)
        for where in (run_dir, run_dir.parent):  # the run dir, or the directory holding it
            code, out, err = run(capsys, "status", "--once", str(where))
            assert code == 0, err
            assert "1 in 1 block: 2 worker ranks, 1 busy, 1 idle" in out, out
            assert "0 queued, 1 running, 0 finished, 1 outstanding" in out, out
            row = next(line.split() for line in out.splitlines() if line.startswith("0 "))
            assert row[3:8] == ["2", "1", "1", "1", "active"], out
        busy.cancel()


@pytest.mark.mpi
def test_status_of_an_encrypted_run(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The command port of an encrypted run takes the front-end's key: status uses it."""
    zmq = pytest.importorskip("zmq")
    if not zmq.has("curve"):
        pytest.skip("this pyzmq has no CurveZMQ")
    with Executor(max_ranks=1, run_dir=str(tmp_path), encrypted=True) as ex:
        assert read_interchange_info(str(tmp_path))["server_key"].endswith("server.key")
        wait_for(ex.pools, timeout=30)
        code, out, err = run(capsys, "status", "--once", str(tmp_path))
        assert code == 0 and "1 in 1 block: 1 worker rank, 0 busy, 1 idle" in out, err


@pytest.mark.mpi
def test_pool_subcommand_and_pool_script_attach_pools_by_hand(tmp_path: Path) -> None:
    """``rankpool pool`` and ``pool_command.sh`` each start a pool that joins a running executor."""
    with Executor(max_ranks=1, run_dir=str(tmp_path)) as ex:
        cli = [str(Path(sys.executable).parent / "rankpool"), "pool",
               *ex.pool_config.to_argv()[:2], "--block-id", "by-cli",
               "--server-key", ex.pool_config.server_key]  # the run's key: needed by default
        script = write_pool_script(str(tmp_path), ex.pool_config)
        procs = [subprocess.Popen([find_mpiexec(), "-n", "2", *cli], start_new_session=True),
                 subprocess.Popen([find_mpiexec(), "-n", "3", "sh", script],
                                  env={**os.environ, "SLURM_JOB_ID": "4242"},
                                  start_new_session=True)]
        try:
            blocks = wait_for(lambda: {p["block_id"]: p["ranks"] for p in ex.pools()} if
                              len(ex.pools()) == 3 else None, timeout=30)
            assert blocks == {"0": 1, "by-cli": 1, "4242": 2}
        finally:
            ex.shutdown()  # the interchange stops every pool, ours included
            for proc in procs:
                try:
                    assert proc.wait(timeout=20) == 0
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    raise


def test_pool_command_and_script(tmp_path: Path) -> None:
    from rankpool.launchers import SrunLauncher
    base = PoolConfig(interchange="tcp://login1:5000", block_id="0", run_dir=str(tmp_path / "a b"))
    command = pool_command(base, "7")
    assert command.startswith(f"env PARSL_WORKER_BLOCK_ID=7 {sys.executable} -m rankpool.mpi_pool "
                              f"--interchange tcp://login1:5000 --block-id 7 ")
    assert f"--run-dir '{tmp_path / 'a b'}'" in command
    path = write_pool_script(str(tmp_path), base, SrunLauncher(ranks_per_node=3), 2)
    text = Path(path).read_text()
    assert os.access(path, os.X_OK) and text.startswith("#!/bin/sh\n")
    assert f"srun --ntasks 6 --ntasks-per-node 3 --nodes 2 --kill-on-bad-exit=0 sh {path}" in text
    assert '--block-id "$block"' in text
    # the block id: the first argument, else the batch job's id, else "manual"
    echo = text.replace("exec env", "echo").replace(sys.executable, "PY")
    for args, env, block in (([], {}, "manual"), (["b9"], {"SLURM_JOB_ID": "5"}, "b9"),
                             ([], {"SLURM_JOB_ID": "5"}, "5"), ([], {"PBS_JOBID": "8.s"}, "8.s")):
        clean = {k: v for k, v in os.environ.items() if not k.endswith(("JOB_ID", "JOBID"))}
        out = subprocess.run(["sh", "-c", echo, "sh", *args], env={**clean, **env},
                             capture_output=True, text=True, timeout=10).stdout
        assert f"PARSL_WORKER_BLOCK_ID={block} PY -m rankpool.mpi_pool" in out
        assert f"--block-id {block} " in out, out


def test_status_row_names_stuck_ranks() -> None:
    from rankpool.cli import _pool_row
    pool = {"block_id": "0", "pool_id": "p", "hosts": ["h"], "node_ranks": [2], "ranks": 2,
            "busy_ranks": 1, "tasks": 1, "held": True, "draining": True, "last_seen_s": 0.5,
            "stuck_ranks": [1, 3]}
    assert _pool_row(pool)[7] == "draining (stuck 1,3)"
    assert _pool_row({**pool, "stuck_ranks": []})[7] == "draining"


def test_status_shows_the_latest_failed_starts_with_their_cause() -> None:
    from rankpool.cli import render
    from rankpool.protocol.starts import FailedStart, StartCause
    failures = [FailedStart(str(b), str(100 + b), StartCause.JOB_ENDED, "COMPLETED", None,
                            f"stderr:\n  srun: error: step refused for block {b}")
                for b in range(4)]
    snap = {"pools": [], "queued": 2, "outstanding": 2, "finished": 0, "failed_starts": failures}
    out = render("/run", {"address": "tcp://h:1"}, snap)
    assert "failed starts  4 blocks ended before their pool registered; the latest 3:" in out
    assert "block 3 (job 103): the block's job ended before its pool registered (state " \
           "COMPLETED)" in out
    assert "srun: error: step refused for block 3" in out
    assert "block 0 (job 100)" not in out
    assert "failed starts" not in render("/run", {}, {**snap, "failed_starts": []})


def test_status_row_names_lost_ranks() -> None:
    from rankpool.cli import _pool_row
    pool = {"block_id": "0", "pool_id": "p", "hosts": ["h"], "ranks": 2, "busy_ranks": 0,
            "tasks": 0, "held": False, "draining": False, "last_seen_s": 0.1,
            "stuck_ranks": [], "lost_ranks": [2, 5]}
    assert _pool_row(pool)[7] == "active (lost 2,5)"
