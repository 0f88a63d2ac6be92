"""Starting blocks: the pool command line, and local blocks under the bundled ``mpiexec``.

A block is one MPI application: ``ranks + 1`` processes (rank 0 is the manager) running
``python -m rankpool.mpi_pool``. With a Parsl provider the provider's launcher wraps
:func:`pool_command`; without one, :class:`LocalBlocks` runs ``mpiexec -n N`` itself.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
from dataclasses import replace

from ..mpi_pool.config import PoolConfig
from ..protocol.starts import FailedStart
from .failed_starts import diagnose
from .mpiexec import find_mpiexec

log = logging.getLogger(__name__)


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
        self._next = 0

    def start(self) -> str:
        """Start a block; return its id."""
        block_id = str(self._next)
        self._next += 1
        self.started.add(block_id)
        cfg = replace(self.base, block_id=block_id, pool_id="")
        argv = [self.mpiexec, "-n", str(self.ranks + 1), *shlex.split(pool_command(cfg))]
        out = None
        if self.run_dir:
            out = open(os.path.join(self.run_dir, f"block-{block_id}.out"), "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.procs[block_id] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT if out else None,
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
        return gone

    def failed_start(self, block_id: str, code: int) -> FailedStart:
        """Why block ``block_id``, whose ``mpiexec`` exited with ``code`` before its pool
        registered, did not start: its output's last lines and its pool's log."""
        out = os.path.join(self.run_dir, f"block-{block_id}.out") if self.run_dir else None
        return diagnose(block_id, "", run_dir=self.run_dir, exit_code=code,
                        message=f"{os.path.basename(self.mpiexec)} exited with code {code}",
                        outputs=[("output", out)])

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


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
