"""Blocks of ``rankpool.Executor`` submitted through a Parsl provider, without Parsl's scaling.

The executor submits one block at a time; :class:`ProviderBlocks` submits it with the tasks
per node its launch uses (see :mod:`.allocation`), polls the provider for its job's state
until told the block's pool registered, reports a job that ended before that, and cancels
what is left at shutdown. :meth:`ProviderBlocks.failed_start` says why such a block did not
start (:func:`.failed_starts.diagnose`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from ..mpi_pool.config import PoolConfig
from ..protocol.starts import FailedStart, StartCause
from .failed_starts import diagnose
from .local import pool_command

log = logging.getLogger(__name__)

#: the longest between two status polls of a block that has not registered yet (seconds)
POLL_CAP = 5.0


class ProviderBlocks:
    """Blocks of one provider: submit, watch the ones not started yet, cancel."""

    def __init__(self, provider: Any, base: PoolConfig, tasks_per_node: int,
                 run_dir: str = "") -> None:
        """``tasks_per_node``: what each block's job asks for per node (the block shape's, see
        :func:`rankpool.launchers.shape.block_shape`, which also fits the provider's options)."""
        self.provider = provider
        self.base = base
        self.tasks_per_node = tasks_per_node
        self.run_dir = run_dir
        self.jobs: dict[str, Any] = {}            # block id -> job id (every block submitted)
        self.waiting: set[str] = set()            # blocks whose pool has not registered yet
        self.statuses: dict[str, Any] = {}        # block id -> its job's last status
        self.submit_errors: dict[str, str] = {}   # block id -> why the provider refused it
        interval = getattr(provider, "status_polling_interval", None)
        self.period = min(POLL_CAP, float(interval) if interval is not None else POLL_CAP)
        self._polled = 0.0
        self._next = 0

    def start(self) -> str:
        """Submit a block; return its id (a provider that refuses it makes a failed start)."""
        block_id = str(self._next)
        self._next += 1
        command = pool_command(replace(self.base, block_id=block_id, pool_id=""))
        self.waiting.add(block_id)
        try:
            job = self.provider.submit(command, self.tasks_per_node, f"rankpool.{block_id}")
            if not job:
                raise RuntimeError("the provider returned no job id")
        except Exception as exc:  # the provider's own errors: the block fails to start
            self.submit_errors[block_id] = f"{type(exc).__name__}: {exc}"
            return block_id
        self.jobs[block_id] = job
        log.info("submitted block %s as job %s", block_id, job)
        return block_id

    def started(self, block_id: str) -> None:
        """The block's pool registered: stop watching it."""
        self.waiting.discard(block_id)

    def ended(self) -> dict[str, str]:
        """Blocks not yet started whose job has ended, with its state (polls the provider at
        most every :attr:`period` seconds)."""
        gone = {b: "not submitted" for b in self.waiting if b in self.submit_errors}
        live = [b for b in self.waiting if b in self.jobs]
        now = time.monotonic()
        if live and now - self._polled >= self.period:
            self._polled = now
            try:
                states = self.provider.status([self.jobs[b] for b in live])
            except Exception:  # a provider that cannot tell now: ask again next time
                log.warning("provider status failed", exc_info=True)
                states = []
            for block_id, status in zip(live, states):
                self.statuses[block_id] = status
                if status.terminal:
                    gone[block_id] = status.state.name
        self.waiting -= set(gone)
        return gone

    def failed_start(self, block_id: str) -> FailedStart:
        """Why block ``block_id`` ended before its pool registered."""
        if block_id in self.submit_errors:
            return FailedStart(block_id, "", StartCause.SUBMIT_FAILED,
                               detail=self.submit_errors[block_id])
        status = self.statuses[block_id]
        return diagnose(block_id, str(self.jobs[block_id]), run_dir=self.run_dir,
                        state=status.state.name, exit_code=status.exit_code,
                        message=status.message or "",
                        outputs=[("stderr", status.stderr_path), ("stdout", status.stdout_path)])

    def stop(self) -> None:
        """Cancel every job submitted (ended ones are ignored by the provider)."""
        jobs = list(self.jobs.values())
        if not jobs:
            return
        try:
            self.provider.cancel(jobs)
        except Exception:  # the jobs may already be gone
            log.warning("could not cancel jobs %s", jobs, exc_info=True)
