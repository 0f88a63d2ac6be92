"""How an :class:`~rankpool.frontends.parsl.executor.ExtremeScaleExecutor` answers Parsl's block
machinery (``BlockProviderExecutor``): it launches blocks with the tasks per node their launch
uses, skips the strategy's first scale-out for the blocks it launched at start, scales in
without cutting off tasks, judges blocks that failed to start, and gives the commands that
start a block or a pool by hand (job-script mode).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from parsl.executors.errors import ScalingFailed
from parsl.executors.status_handling import BlockProviderExecutor
from parsl.jobs.states import JobStatus

from ...launchers import jobscript
from ...launchers.shape import BlockShape
from ...mpi_pool.config import PoolConfig
from .blocks import launch_command
from .scaling import BlockControl

log = logging.getLogger(__name__)


class BlockHooks(BlockProviderExecutor):
    """Parsl's block hooks, as one ``ExtremeScaleExecutor`` fills them (its state: set up in
    its ``__init__`` and ``start``)."""

    label: str
    managed: bool
    working_dir: str | None
    launch_cmd: str | None
    _shape: BlockShape
    _pool_base: PoolConfig | None
    _skip_init: int | None
    _control: BlockControl

    @property
    def workers_per_node(self) -> int | float:
        """Worker ranks per node of a block: the strategy's slots per node, in ranks."""
        return self._shape.workers_per_node

    @property
    def status_polling_interval(self) -> int | float:
        """The provider's polling interval; 0 (never polled nor scaled) when not ``managed``."""
        return super().status_polling_interval if self.managed else 0

    def scale_out_facade(self, n: int) -> list[str]:
        """Launch ``n`` blocks, except the strategy's first call, for blocks :meth:`start`
        launched."""
        skip = self._skip_init
        if skip is not None:
            self._skip_init = None
            if n == skip:
                log.debug("%s: init_blocks=%d already launched at start", self.label, n)
                return []
        return super().scale_out_facade(n)

    def _launch_block(self, block_id: str) -> Any:
        """Submit one block with the tasks per node its launch uses: Parsl submits 1, which on
        nodes shared with other jobs leaves the block's ``srun`` without slots (see
        :mod:`rankpool.launchers.allocation`)."""
        if self.provider is None:
            raise ScalingFailed(self, "no provider to launch blocks with")
        job_id = self.provider.submit(self._get_launch_command(block_id),
                                      self._shape.tasks_per_node,
                                      f"parsl.{self.label}.block-{block_id}")
        if not job_id:
            raise ScalingFailed(self, "the provider returned no job id for the block")
        return job_id

    def _get_launch_command(self, block_id: str) -> str:
        if self._pool_base is None:
            raise RuntimeError("the executor must be started before blocks can be launched")
        cfg = replace(self._pool_base, block_id=block_id, pool_id="")
        return launch_command(cfg, self._shape, working_dir=self.working_dir,
                              launch_cmd=self.launch_cmd)

    def block_command(self, block_id: str) -> str:
        """The command to start block ``block_id`` by hand (``managed=False``), launcher not
        included."""
        return self._get_launch_command(block_id)

    def pool_command(self, block_id: str = "manual") -> str:
        """The pool command line for a job script (job-script mode): run it on every rank of
        one ``srun``/``mpiexec`` launch. It names the interchange's address and pool port (and
        its key file when connections are encrypted); ``pool_command.sh`` in the run directory
        runs the same, with the block id taken from the batch job."""
        if self._pool_base is None:
            raise RuntimeError("the executor must be started before pools can attach")
        return jobscript.pool_command(self._pool_base, block_id)

    def scale_in(self, blocks: int, max_idletime: float | None = None, *,
                 force: bool = False) -> list[str]:
        """End up to ``blocks`` blocks without cutting off tasks; return the block ids ended.

        Idle blocks go first: each is held, checked idle again, drained (its pool leaves
        cleanly), then its job is cancelled; blocks whose pool never connected come next.
        A block with tasks running goes only when ``force`` (its tasks then fail with
        ``ManagerLost`` and Parsl's retries run them elsewhere). ``max_idletime`` is accepted
        for Parsl's HTEX-style strategy; only idle blocks are ever chosen without ``force``.
        """
        return self._control.scale_in(blocks, force=force)

    def handle_errors(self, status: dict[str, JobStatus]) -> None:
        """Apply ``block_error_handler`` to the blocks that failed to start.

        A block whose pool registered did start; its later end (killed, walltime, crashed
        with a task) costs its tasks a retry, not the executor its life. A block whose job
        ended before any pool of it registered is diagnosed, logged and recorded, and counts
        as a failed start (:mod:`rankpool.frontends.parsl.starts`).
        """
        self._control.starts.judge(status)
