"""MPI applications as tasks on a local pool: real MPI programs (a C one compiled here with the
bundled MPICH's ``mpicc``, a Python one run with ``python -m mpi4py``) started by
``rankpool.run_mpi`` and by plain functions on the ranks a task holds, mixed with 1-rank and
``comm`` tasks in one pool."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import alive, descendants, executor, pool_tree, wait_for, wait_gone

from rankpool import ApplicationError, ApplicationSetupError, TaskTimeout, run_mpi
from rankpool.mpi_pool.node_names import node_name

pytestmark = pytest.mark.mpi

PROGRAMS = Path(__file__).resolve().parent / "mpi_programs"
PY_WORLD = [sys.executable, "-m", "mpi4py", str(PROGRAMS / "world.py")]


@pytest.fixture(scope="module")
def c_world(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``world.c`` compiled with the MPICH wrapper next to this Python's ``mpiexec``."""
    mpicc = Path(sys.executable).parent / "mpicc"
    if not mpicc.exists() or shutil.which("cc") is None:
        pytest.skip("no C compiler (or no mpicc beside this Python): the C application is skipped")
    out = tmp_path_factory.mktemp("c") / "world"
    subprocess.run([str(mpicc), "-o", str(out), str(PROGRAMS / "world.c")], check=True,
                   timeout=120)
    return str(out)


@pytest.fixture(scope="module")
def ex(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One pool of 4 worker ranks for every test that leaves it serving."""
    with executor(tmp_path_factory.mktemp("apps"), max_ranks=4) as pool:
        yield pool


#: what each rank of the programs prints (ranks' lines may interleave in the launcher's output)
SAID = re.compile(r"rank (?P<rank>\d+) size (?P<size>\d+) host (?P<host>\S+?) pid (?P<pid>\d+)"
                  r"(?: opt=\[(?P<opt>[^\]]*)\])?")


def ranks_of(stdout: str) -> list[dict[str, str]]:
    """What each rank of a program said, in rank order."""
    return sorted((m.groupdict() for m in SAID.finditer(stdout)), key=lambda d: int(d["rank"]))


def total(comm: Any) -> int:
    return comm.allreduce(1)


def environ_of(comm: Any) -> dict[str, str]:
    return dict(os.environ)


def square(x: int) -> int:
    return x * x


def shell_app(code: int = 0) -> dict[str, Any]:
    """A plain function (no ``comm``): starts the Python program through the prefix, as a
    Parsl bash app would, and says what the nested launch saw."""
    line = f"$PARSL_MPI_PREFIX {' '.join(PY_WORLD)} {code}"
    done = subprocess.run(line, shell=True, capture_output=True, text=True, timeout=60)
    return {"returncode": done.returncode, "stdout": done.stdout,
            "pmi": sorted(k for k in os.environ if k.startswith("PMI_")),
            "prefix": os.environ["PARSL_MPI_PREFIX"]}


def test_applications_of_2_and_4_ranks_mixed_with_other_tasks(ex: Any, c_world: str) -> None:
    futures: list[tuple[str, int, Future[Any]]] = []
    for width in (2, 4, 2):
        futures.append(("c", width, ex.requirements(num_ranks=width).submit(run_mpi, [c_world])))
        futures.append(("py", width, ex.requirements(num_ranks=width).submit(run_mpi, PY_WORLD)))
    singles = [ex.submit(square, i) for i in range(20)]
    comms = [ex.requirements(num_ranks=n).submit(total, None) for n in (2, 3, 4)]
    for kind, width, future in futures:
        done = future.result(timeout=120)
        ranks = ranks_of(done.stdout)
        assert done.returncode == 0
        # MPI_COMM_WORLD of the application is exactly the task's ranks, on the pool's host
        assert [int(r["rank"]) for r in ranks] == list(range(width)), (kind, done.stdout)
        assert {int(r["size"]) for r in ranks} == {width}
        assert {r["host"] for r in ranks} == {node_name()}
        assert done.command[:6] == ["mpiexec", "-n", str(width), "-ppn", str(width), "-hosts"]
    assert [f.result(timeout=60) for f in singles] == [i * i for i in range(20)]
    assert [f.result(timeout=60) for f in comms] == [2, 3, 4]


def test_a_plain_function_gets_parsl_variables_and_a_clean_nested_launch(ex: Any) -> None:
    seen = ex.requirements(num_ranks=3).submit(shell_app).result(timeout=120)
    assert seen["returncode"] == 0, seen
    assert seen["pmi"] == []  # the pool's own PMI variables are out of the way
    assert seen["prefix"].startswith("mpiexec -n 3 -ppn 3 -hosts ")
    assert [int(r["size"]) for r in ranks_of(seen["stdout"])] == [3, 3, 3]
    # one rank: an application when the specification names an MPI shape, as in Parsl
    one = ex.requirements(num_nodes=1, ranks_per_node=1).submit(shell_app).result(timeout=120)
    assert one["prefix"].startswith("mpiexec -n 1 -ppn 1 -hosts ") and one["returncode"] == 0
    assert [int(r["size"]) for r in ranks_of(one["stdout"])] == [1]
    plain = ex.submit(environ_of, None).result(timeout=60)
    assert "PARSL_MPI_PREFIX" not in plain and any(k.startswith("PMI_") for k in plain)
    # and they are back for the next task on those ranks (comm task: MPI still works)
    assert ex.requirements(num_ranks=4).submit(total, None).result(timeout=60) == 4


def test_launcher_options_reach_the_launch_line(ex: Any) -> None:
    spec = {"num_ranks": 2, "launcher_options": "-genv RP_APP_OPTION passed"}
    done = ex.requirements(**spec).submit(run_mpi, PY_WORLD).result(timeout=120)
    assert done.command[-len(PY_WORLD) - 2:-len(PY_WORLD)] == ["-genv", "RP_APP_OPTION"] or \
        "-genv RP_APP_OPTION passed" in " ".join(done.command)
    assert {r["opt"] for r in ranks_of(done.stdout)} == {"passed"}


def test_non_zero_exit_raises_with_code_output_and_command(ex: Any, c_world: str) -> None:
    exc = ex.requirements(num_ranks=2).submit(run_mpi, PY_WORLD + ["7"]).exception(timeout=120)
    assert isinstance(exc, ApplicationError), repr(exc)
    assert exc.returncode != 0
    assert "rank 0 fails with 7" in exc.stderr
    assert exc.command[-len(PY_WORLD) - 1:] == PY_WORLD + ["7"]
    c_exc = ex.requirements(num_ranks=2).submit(run_mpi, [c_world, "5"]).exception(timeout=120)
    assert isinstance(c_exc, ApplicationError) and c_exc.returncode == 5, repr(c_exc)
    assert "rank 0 size 2" in c_exc.stdout
    # the ranks serve on
    assert ex.requirements(num_ranks=4).submit(total, None).result(timeout=60) == 4


def test_missing_program_and_bad_launcher_are_refused_naming_the_key(ex: Any,
                                                                     tmp_path: Path) -> None:
    missing = ex.requirements(num_ranks=2).submit(run_mpi, [str(tmp_path / "nope")])
    exc = missing.exception(timeout=60)
    assert isinstance(exc, ApplicationSetupError) and exc.key == "argv", repr(exc)
    assert "does not exist" in str(exc)
    plain = tmp_path / "plain.txt"
    plain.write_text("not a program")
    exc = ex.requirements(num_ranks=2).submit(run_mpi, [str(plain)]).exception(timeout=60)
    assert isinstance(exc, ApplicationSetupError) and "not executable" in str(exc)
    # a launcher this host does not have: the prefix cannot be used
    exc = ex.requirements(num_ranks=2, mpi_launcher="aprun").submit(
        run_mpi, PY_WORLD).exception(timeout=60)
    assert isinstance(exc, ApplicationSetupError) and exc.key == "mpi_launcher", repr(exc)


def shell_line(line: str) -> int:
    """A plain function that runs a shell line (a Parsl bash app in miniature)."""
    return subprocess.run(line, shell=True, timeout=600).returncode


@pytest.mark.parametrize("how", ["run_mpi", "shell"])
def test_walltime_kills_the_whole_application_and_the_ranks_serve_on(
        ex: Any, c_world: str, how: str) -> None:
    before = descendants()
    spec = ex.requirements(num_ranks=4, walltime=3)
    if how == "run_mpi":
        future = spec.submit(run_mpi, [c_world, "0", "60"])
    else:  # the shell is interrupted, not the launcher it started: that is ended too
        future = spec.submit(shell_line, f"$PARSL_MPI_PREFIX {c_world} 0 60")
    exc = future.exception(timeout=60)
    assert isinstance(exc, TaskTimeout), repr(exc)
    # no process of the application is left: nothing runs the program any more
    wait_for(lambda: not [p for p in psutil.process_iter(["cmdline"])
                          if p.info["cmdline"] and p.info["cmdline"][0] == c_world],
             timeout=10)
    assert ex.requirements(num_ranks=4).submit(total, None).result(timeout=60) == 4
    assert descendants() <= before | {p.pid for p in pool_tree(ex)}


def test_held_ranks_use_no_cpu_worth_measuring(ex: Any) -> None:
    ex.bootup()  # every rank started
    ranks = [p for p in pool_tree(ex) if p.name().startswith("python")
             and "rankpool.mpi_pool" in p.cmdline()]
    assert len(ranks) >= 5  # the ranks (and their keepers, where they have them)
    # the worker ranks only: rank 0 probes for the task's report while work is out
    ranks = [p for p in ranks if p.environ().get("PMI_RANK") != "0"]
    assert len(ranks) >= 4
    future = ex.requirements(num_ranks=4).submit(run_mpi, ["sleep", "3"])
    wait_for(lambda: ex.pools()[0]["busy_ranks"] == 4, timeout=30)
    before = [p.cpu_times() for p in ranks]
    start = time.monotonic()
    assert future.result(timeout=60).returncode == 0
    wall = time.monotonic() - start
    used = [(a.user + a.system) - (b.user + b.system)
            for a, b in zip((p.cpu_times() for p in ranks), before)]
    assert wall > 1.0
    assert max(used) / wall < 0.10, used  # a spinning rank would use ~100 %


def test_held_and_idle_ranks_sleep_until_rung(ex: Any) -> None:
    """While an application runs, its held ranks sleep on their doorbells and idle ranks on
    theirs: a few wake-ups a second each, not hundreds (each would take a core from the
    application's processes); the held rank is released when the application ends."""
    ex.bootup()
    ranks = [p for p in pool_tree(ex) if p.name().startswith("python")
             and "rankpool.mpi_pool" in p.cmdline() and p.environ().get("PMI_RANK") != "0"]
    assert len(ranks) >= 4  # the worker ranks (and their keepers, which block)
    future = ex.requirements(num_ranks=2).submit(run_mpi, ["sleep", "3"])
    wait_for(lambda: ex.pools()[0]["busy_ranks"] == 2, timeout=30)
    time.sleep(0.3)  # past the idle ranks' hot window
    before = [p.num_ctx_switches().voluntary for p in ranks]
    start = time.monotonic()
    time.sleep(2.0)
    wakes = [(p.num_ctx_switches().voluntary - b) / (time.monotonic() - start)
             for p, b in zip(ranks, before)]
    assert max(wakes) < 30, wakes  # a rank polling every few ms wakes 100-500 times a second
    assert future.result(timeout=60).returncode == 0
    assert ex.requirements(num_ranks=4).submit(run_mpi, ["true"]).result(timeout=60) \
        .returncode == 0  # every rank free again


def test_rank_zero_waits_for_the_ring_of_ranks_that_hold_one_task(ex: Any) -> None:
    """While each busy rank holds one task (applications, here), rank 0 sleeps until a rank
    rings it with its report instead of looking every 0.1 ms for the first 50 ms after each
    start: tens of wake-ups per application, not hundreds."""
    ex.bootup()
    zero = [p for p in pool_tree(ex) if p.name().startswith("python")
            and "rankpool.mpi_pool" in p.cmdline() and p.environ().get("PMI_RANK") == "0"
            and not any("rankpool.mpi_pool" in c.cmdline() for c in p.children())]
    assert len(zero) == 1  # rank 0 itself, not its keeper
    view = ex.requirements(num_ranks=2)
    view.submit(run_mpi, ["true"]).result(timeout=60)
    before = zero[0].num_ctx_switches().voluntary
    for _ in range(8):
        assert view.submit(run_mpi, ["sleep", "0.2"]).result(timeout=60).returncode == 0
    wakes = (zero[0].num_ctx_switches().voluntary - before) / 8
    assert wakes < 100, wakes  # polling through each start's hot window: about 500


def test_comm_task_and_application_on_the_same_ranks_leave_no_state(ex: Any) -> None:
    for _ in range(3):
        assert ex.requirements(num_ranks=4).submit(total, None).result(timeout=60) == 4
        done = ex.requirements(num_ranks=4).submit(run_mpi, PY_WORLD).result(timeout=120)
        assert [int(r["size"]) for r in ranks_of(done.stdout)] == [4] * 4
    seen = ex.requirements(num_ranks=4).submit(environ_of, None).result(timeout=60)
    assert not [k for k in seen if k.startswith(("PARSL_", "RANKPOOL_MPI"))], seen
    assert any(k.startswith("PMI_") for k in seen)


def test_spawn_mode_starts_the_program_on_the_held_ranks(ex: Any, tmp_path: Path) -> None:
    future = ex.requirements(num_ranks=3).submit(run_mpi, PY_WORLD + ["0", "0", str(tmp_path)],
                                                 mode="spawn")
    done = future.result(timeout=120)
    assert done.returncode == 0 and done.command[0] == "MPI_Comm_spawn"
    said = ranks_of("\n".join(p.read_text() for p in tmp_path.glob("said-*.txt")))
    assert [(int(r["rank"]), int(r["size"])) for r in said] == [(0, 3), (1, 3), (2, 3)]
    assert {r["host"] for r in said} == {node_name()}
    exc = ex.requirements(num_ranks=2).submit(run_mpi, PY_WORLD, mode="fork").exception(60)
    assert isinstance(exc, ApplicationSetupError) and exc.key == "mode", repr(exc)
    assert ex.requirements(num_ranks=4).submit(total, None).result(timeout=60) == 4


@pytest.mark.parametrize("victim", ["pool", "rank"])
def test_killed_pool_leaves_no_application_process(tmp_path: Path, c_world: str,
                                                   victim: str) -> None:
    """The whole pool killed, or only the rank running the application (``kill -9``)."""
    with executor(tmp_path, max_ranks=3) as ex:
        assert ex.submit(square, 3).result(timeout=60) == 9
        future = ex.requirements(num_ranks=2).submit(run_mpi, [c_world, "0", "120"])
        app = wait_for(lambda: [p for p in psutil.process_iter(["cmdline"])
                                if p.info["cmdline"] and p.info["cmdline"][0] == c_world],
                       timeout=60)
        assert len(app) == 2
        mpiexec = ex._blocks.procs["0"]  # type: ignore[union-attr]
        if victim == "pool":
            os.killpg(mpiexec.pid, signal.SIGKILL)
        else:  # the rank whose child is the application's launcher
            [launcher] = [p for p in pool_tree(ex) if p.name() == "mpiexec"
                          and p.pid != mpiexec.pid]
            launcher.parent().kill()
        wait_gone(app, timeout=15)
        assert future.exception(timeout=30) is not None
    assert not [p for p in app if alive(p)]
