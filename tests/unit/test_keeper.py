"""The keeper of a pool rank and rank 0's watch over keepers, without MPI: a process forks
its rank as ``python -m rankpool.mpi_pool`` does, the rank dies in each way a task can end it,
and the keeper's exit status and death note say what the pool needs to know."""

from __future__ import annotations

import contextlib
import mmap
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rankpool.errors import SpawnedProgramLost, WorkerLost
from rankpool.mpi_pool.deaths import Death, DeathWatch, Identity, lost_error
from rankpool.wording import describe_exit

pytestmark = pytest.mark.timeout(60)

# the child waits for a line on stdin, then ends as told: a signal name, "exitN", or "clean"
RANK = """
import os, signal, sys
from rankpool.mpi_pool.keeper import keep
link = keep()
link.serving(int(sys.argv[1]), sys.argv[2])
link.task(41)
link.idle()
link.task(42)
print(os.getpid(), flush=True)
how = sys.stdin.readline().strip()
if how == "clean":
    link.finished()
    sys.exit(3)
if how.startswith("exit"):
    os._exit(int(how[4:]))
if how == "spawnlost":  # as spawn mode's watch ends a rank whose spawned program never started
    from rankpool.mpi_pool.keeper import last_words
    last_words({"spawn": {"program": "./x", "count": 2, "seen": 2, "statuses": [3, 3]}})
    os._exit(6)
os.kill(os.getpid(), getattr(signal, how))
"""


def _start(tmp_path: Path, rank: int) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-c", RANK, str(rank), str(tmp_path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def _end(proc: subprocess.Popen[str], how: str) -> int:
    assert proc.stdin is not None
    proc.stdin.write(how + "\n")
    proc.stdin.flush()
    return proc.wait(30)


@pytest.mark.parametrize(("how", "status"), [("SIGSEGV", -11), ("SIGKILL", -9), ("exit3", 3),
                                             ("exit0", 0)])
def test_a_dead_worker_rank_leaves_a_note_and_its_keeper_exits_0(tmp_path: Path, how: str,
                                                                  status: int) -> None:
    proc, child = _start(tmp_path, rank=3)
    watch = DeathWatch({3: Identity(child, proc.pid)}, str(tmp_path), "here")
    assert watch.watching == 1 and not watch.deaths()
    assert _end(proc, how) == 0  # the launcher sees a clean exit and keeps the job
    deadline = time.monotonic() + 10
    deaths = []
    while not deaths and time.monotonic() < deadline:
        deaths = watch.deaths()
        time.sleep(0.01)
    assert deaths == [Death(3, "here", child, status, 42, True)]
    assert not list(tmp_path.iterdir())  # the note was read and removed
    watch.close()
    assert not tmp_path.exists()


def test_a_rank_that_ends_itself_leaves_its_reason_in_the_note(tmp_path: Path) -> None:
    proc, child = _start(tmp_path, rank=2)
    watch = DeathWatch({2: Identity(child, proc.pid)}, str(tmp_path), "here")
    assert _end(proc, "spawnlost") == 0
    deadline = time.monotonic() + 10
    deaths = []
    while not deaths and time.monotonic() < deadline:
        deaths = watch.deaths()
        time.sleep(0.01)
    [death] = deaths
    assert (death.rank, death.status, death.task, death.running) == (2, 6, 42, True)
    exc = lost_error(42, death, "while running it")
    assert isinstance(exc, SpawnedProgramLost) and isinstance(exc, WorkerLost)
    assert (exc.program, exc.count, exc.exit_codes, exc.rank, exc.pid) == \
        ("./x", 2, (3, 3), 2, child)
    assert str(exc) == (f"task 42 lost: the spawned program ./x (2 processes) exited with status "
                        f"3 before MPI_Init; its parent, worker rank 2 (pid {child} on here), was "
                        f"ended, as MPI_Comm_spawn cannot be interrupted: run programs that may "
                        f"fail to start with mode='launcher' (the default)")
    import pickle
    assert str(pickle.loads(pickle.dumps(exc))) == str(exc)
    other = lost_error(41, death, "before sending its result")  # another task of that rank
    assert type(other) is WorkerLost and "before sending its result" in str(other)
    watch.close()


def test_rank_0_death_and_a_clean_end_pass_the_status_on(tmp_path: Path) -> None:
    proc, _ = _start(tmp_path, rank=0)
    assert _end(proc, "SIGSEGV") == -signal.SIGSEGV  # the pool is lost: the launcher must see it
    proc, _ = _start(tmp_path, rank=2)
    assert _end(proc, "clean") == 3  # a rank that ended its serving: its own status
    assert not tmp_path.exists()  # the pool's note directory went with it


def test_keepers_off(tmp_path: Path) -> None:
    env = {**os.environ, "RANKPOOL_NO_KEEPER": "1"}
    code = "from rankpool.mpi_pool.keeper import keep; print(keep())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=30)
    assert out.stdout.strip() == "None"


def test_worker_lost_names_rank_host_pid_and_how() -> None:
    exc = WorkerLost(7, 3, "node7", 4711, -11)
    assert str(exc) == ("task 7 lost: worker rank 3 (pid 4711 on node7) was killed by signal 11 "
                        "(SIGSEGV) while running it")
    assert exc.signal == 11 and exc.exit_code is None
    import pickle
    again = pickle.loads(pickle.dumps(exc))
    assert (again.rank, again.host, again.pid, again.status, str(again)) == \
        (3, "node7", 4711, -11, str(exc))
    assert WorkerLost(1, 2, "h", 5, 3).exit_code == 3
    assert describe_exit(None) == "ended in a way nobody saw"


# the child maps a file named as MPICH names its node's file, as MPI_Init does, then waits
STARTING = """
import mmap, os, sys, time
from rankpool.mpi_pool.keeper import keep
link = keep()
with open(sys.argv[1], "w+b") as f:
    f.truncate(4096)
    view = mmap.mmap(f.fileno(), 4096)
print(os.getpid(), flush=True)
time.sleep(60)
"""


_DEFAULT_SIGINT = "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"


@contextlib.contextmanager
def _starting_rank(path: str, before: str = "") -> Iterator[subprocess.Popen[str]]:
    """A keeper whose rank has mapped ``path`` and has not served yet; ``path`` goes after.
    ``before``: code the keeper runs first. SIGINT starts at its default whatever this
    process was given (a shell's background job ignores it), as a launcher's Ctrl-C finds it,
    and standard input is open, as launchers leave it."""
    proc = subprocess.Popen([sys.executable, "-c", _DEFAULT_SIGINT + before + STARTING, path],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        int(proc.stdout.readline())
        assert os.path.exists(path)
        yield proc
    finally:
        proc.kill()
        if os.path.exists(path):
            os.unlink(path)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_rank_stopped_before_it_served_leaves_no_mpich_file(sig: int) -> None:
    """A block cancelled while MPI starts (Slurm signals the processes it started: the
    keepers) ends its ranks before the pool unlinked MPICH's file: the keeper removes it."""
    path = f"/dev/shm/mpich_shm_keeper{os.getpid():x}{sig}_0"
    with _starting_rank(path) as proc:
        proc.send_signal(sig)  # to the keeper, which passes it on
        assert proc.wait(30) == -sig  # and ends as its rank did
        assert not os.path.exists(path)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_that_comes_while_the_keeper_starts_reaches_its_rank(sig: int) -> None:
    """The signal comes after the fork, before the keeper has its handlers (here it sleeps
    in an at-fork hook, as a loaded machine may hold it there): it waits until they are in,
    and is passed on. It was lost (SIGINT: a ``KeyboardInterrupt`` raised in the hook and
    ignored, the rank left running) or ended the keeper without its sweep (SIGTERM)."""
    path = f"/dev/shm/mpich_shm_keeper_late{os.getpid():x}{sig}_0"
    slow = "import os, time\nos.register_at_fork(after_in_parent=lambda: time.sleep(1))\n"
    with _starting_rank(path, before=slow) as proc:
        proc.send_signal(sig)  # during the keeper's sleep
        assert proc.wait(30) == -sig
        assert not os.path.exists(path)


def test_a_file_another_process_maps_stays() -> None:
    """The keeper removes only what no process maps: another job's file (here this test's)
    stays, even when made since the rank started."""
    path = f"/dev/shm/mpich_shm_kept{os.getpid():x}_0"
    with _starting_rank(path) as proc, open(path, "r+b") as f, mmap.mmap(f.fileno(), 4096):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == -signal.SIGTERM
        assert os.path.exists(path)


@pytest.mark.parametrize(("how", "said"), [("os._exit(3)", "exited with status 3"),
                                           ("os.abort()", "was killed by signal 6 (SIGABRT)")])
@pytest.mark.parametrize("stdin", ["open", "closed"])
def test_a_rank_that_dies_by_itself_before_it_served_ends_the_launch(how: str, said: str,
                                                                     stdin: str) -> None:
    """No srun step above it: the keeper says why on standard error and dies of a signal (the
    rank's own, or SIGTERM), which ends a Hydra job whose other ranks wait in MPI_Init. Also
    when it was started with standard input closed: its pipe to the rank then takes
    descriptor 0, and the keeper used to close its standard output and error with the
    descriptors it drops (and exit 1, its sweep's report failing)."""
    code = f"import os\nfrom rankpool.mpi_pool.keeper import keep\nkeep()\n{how}\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=30, stdin=subprocess.DEVNULL,
                         preexec_fn=(lambda: os.close(0)) if stdin == "closed" else None)
    assert out.returncode == (-signal.SIGABRT if "abort" in how else -signal.SIGTERM)
    assert f"{said} before the pool started; the other ranks would wait for it for ever: " \
           f"ending the launch" in out.stderr, out.stderr


def test_a_rank_stopped_by_a_signal_sent_to_it_ends_nothing_further() -> None:
    """A batch system that cancels a job signals every process of it, a rank perhaps before its
    keeper: a rank ended by SIGTERM did not die by itself, and its keeper only passes it on."""
    code = ("import os, signal\nfrom rankpool.mpi_pool.keeper import keep\nkeep()\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == -signal.SIGTERM
    assert "before the pool started" not in out.stderr, out.stderr
