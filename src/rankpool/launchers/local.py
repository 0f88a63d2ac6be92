"""Blocks on this machine under the bundled ``mpiexec``, and the pool command line.

A block is one MPI application: ``ranks + 1`` processes (rank 0 is the manager) running
``python -m rankpool.mpi_pool``. With a Parsl provider the provider's launcher wraps
:func:`pool_command`; without one, :class:`LocalBlocks` runs ``mpiexec -n N`` itself. The
default Parsl provider's launcher is :mod:`.local_launcher`'s; this module imports nothing of
Parsl, so ``rankpool.Executor`` without a provider never loads it.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import replace
from typing import Any

from ..exit_codes import ExitCode
from ..mpi_pool.config import PoolConfig
from ..mpi_pool.hydra_notice import blocked
from ..mpi_pool.mpich_files import sweep as sweep_mpich_files
from ..private_files import open_private
from ..protocol.starts import FailedStart
from .failed_starts import diagnose
from .mpiexec import find_mpiexec, mpiexec_flavor, survival_options

log = logging.getLogger(__name__)


def local_launch(mpiexec: str) -> list[str]:
    """A local block's ``mpiexec`` with its options: those that keep the job alive when a
    rank dies, and, for Open MPI, more ranks than cores (MPICH allows it by itself). Hydra's
    runs with its process-end notice blocked, which its spawned processes inherit (see
    :mod:`rankpool.mpi_pool.hydra_notice`)."""
    flavor = mpiexec_flavor(mpiexec)
    extra = ["--oversubscribe"] if flavor == "openmpi" else []
    line = [mpiexec, *survival_options(mpiexec), *extra]
    return blocked(line) if flavor == "hydra" else line


def pool_command(cfg: PoolConfig, python: str | None = None) -> str:
    """The shell command that starts one pool on every rank of an MPI launch."""
    argv = [python or sys.executable, "-m", "rankpool.mpi_pool", *cfg.to_argv()]
    return shlex.join(argv)


class LocalBlocks:
    """Blocks started on this machine with ``mpiexec -n ranks+1``, one process group each."""

    def __init__(self, ranks: int, base: PoolConfig, mpiexec: str | None = None,
                 run_dir: str = "") -> None:
        self.ranks = ranks
        self.base = base
        self.mpiexec = find_mpiexec(mpiexec)
        self.run_dir = run_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started: set[str] = set()
        self.since = 0.0  # when the first block started (``time.time``): see :meth:`sweep`
        self._next = 0

    def start(self) -> str:
        """Start a block; return its id."""
        block_id = str(self._next)
        self._next += 1
        self.started.add(block_id)
        self.since = self.since or time.time()
        cfg = replace(self.base, block_id=block_id, pool_id="")
        argv = [*local_launch(self.mpiexec), "-n", str(self.ranks + 1),
                *shlex.split(pool_command(cfg))]
        out = None
        if self.run_dir:
            out = os.fdopen(open_private(os.path.join(self.run_dir, f"block-{block_id}.out")),
                            "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.procs[block_id] = subprocess.Popen(argv, stdout=out,
                                                stderr=subprocess.STDOUT if out else None,
                                                stdin=subprocess.DEVNULL, start_new_session=True,
                                                env=env)
        if out is not None:
            out.close()
        log.info("started block %s: %s", block_id, shlex.join(argv))
        return block_id

    def exited(self) -> dict[str, int]:
        """Blocks whose ``mpiexec`` has exited since the last call, with their exit codes."""
        gone = {b: p.returncode for b, p in self.procs.items() if p.poll() is not None}
        for b in gone:
            del self.procs[b]
        if any(gone.values()):
            self.sweep()
        return gone

    def sweep(self) -> None:
        """Remove the MPICH files in ``/dev/shm`` that ranks of these blocks or of the MPI
        applications they ran made and left: a block killed, or an application whose launcher
        killed its ranks, ends without ``MPI_Finalize``. Only this user's files made since the
        first block started that no process maps any more (a running job's stay)."""
        if self.since:
            for path in sweep_mpich_files(self.since):
                log.info("removed %s, left by an MPI job that did not finalize", path)

    def failed_start(self, block_id: str, code: int) -> FailedStart:
        """Why block ``block_id``, whose ``mpiexec`` exited with ``code`` before its pool
        registered, did not start: its output's last lines and its pool's log."""
        out = os.path.join(self.run_dir, f"block-{block_id}.out") if self.run_dir else None
        return diagnose(block_id, "", run_dir=self.run_dir, exit_code=code,
                        message=f"{os.path.basename(self.mpiexec)} exited with code {code}",
                        outputs=[("output", out)])

    def output(self, block_id: str) -> str:
        """Where block ``block_id``'s output goes."""
        if not self.run_dir:
            return "this process's stderr"
        return os.path.join(self.run_dir, f"block-{block_id}.out")

    def kill(self) -> None:
        """SIGKILL every block's ``mpiexec`` now (a second Ctrl-C)."""
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGKILL)

    def stop(self, timeout: float = 10.0, interrupt: bool = False) -> None:
        """Wait up to ``timeout`` for every block to leave by itself (its pool was stopped);
        then SIGINT (``mpiexec`` forwards it: each rank interrupts its task and the pool ends
        cleanly), SIGTERM, SIGKILL, each logged. ``interrupt``: SIGINT at once (Ctrl-C)."""
        steps = [(0.0 if interrupt else timeout, signal.SIGINT), (2.0, signal.SIGTERM),
                 (2.0, signal.SIGKILL)]
        for block_id, proc in list(self.procs.items()):
            for wait, sig in steps:
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    if not interrupt or sig != signal.SIGINT:
                        log.warning("block %s did not exit within %.0f s; sending %s", block_id,
                                    wait, signal.Signals(sig).name)
                    _signal_group(proc, sig)
            else:
                proc.wait()
        self.procs.clear()
        self.sweep()


def exit_meaning(code: int) -> str:
    """What a local block's ``mpiexec`` exit code says, in a few words."""
    known = {0: "its pool left", ExitCode.REFUSED: "the interchange refused its pool",
             ExitCode.STUCK: "ranks stuck in tasks: MPI job aborted",
             ExitCode.UNREACHABLE: "its pool got no answer from the interchange"}
    if code in known:
        return known[code]
    if code < 0:
        return f"mpiexec killed by {_signal_name(-code)}"
    if code > 128 or code == 9:  # Hydra reports a rank killed by signal N as N or 128+N
        return f"a rank killed by {_signal_name(code - 128 if code > 128 else code)}"
    return "a rank failed"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def positive_int(name: str, value: Any) -> int:
    """``value``, or a ValueError naming ``name`` when it is not a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value
