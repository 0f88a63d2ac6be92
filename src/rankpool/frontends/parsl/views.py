"""What an ``ExtremeScaleExecutor`` shows and lets one do to its pools by hand.

The views ask the interchange through the executor's :class:`~.parsl_scaling.BlockControl`
(``self._control``); the keys follow HTEX's where tools written for it read them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from parsl.monitoring.message_type import MessageType

from .blocks import node_info

if TYPE_CHECKING:
    from .scaling import BlockControl


class PoolViews:
    """Pool listings, hold/release/drain by block, and monitoring ``node`` rows."""

    _control: BlockControl
    run_id: str | None
    submit_monitoring_radio: Any

    def hold_block(self, block_id: str) -> list[str]:
        """Give block ``block_id`` no new tasks (running ones go on); return its pool ids."""
        return self._control.hold(block_id)

    def release_block(self, block_id: str) -> list[str]:
        """Undo :meth:`hold_block`; return the block's pool ids."""
        return self._control.release(block_id)

    def drain_block(self, block_id: str) -> list[str]:
        """Let block ``block_id`` finish its tasks, take no more and exit; return its pool ids."""
        return self._control.drain(block_id)

    def connected_managers(self) -> list[dict[str, Any]]:
        """One dict per connected pool: ``block_id``, ``pool_id``, ``hosts``, ``ranks``,
        ``node_ranks``, ``widest`` (of the usable ranks: stuck and dead ones left out),
        ``stuck_ranks``, ``lost_ranks`` (worker ranks that died), ``busy_ranks``, ``tasks``,
        ``held``, ``draining``, ``rankpool`` and ``python`` versions, ``last_seen_s``,
        ``devices`` (``{rank: device id}`` for the ranks that own an accelerator); plus HTEX's
        ``manager``,
        ``worker_count`` and ``active`` keys for tools written for it."""
        pools = self._control.pools()
        for pool in pools:
            pool.setdefault("manager", pool["pool_id"])
            pool.setdefault("worker_count", pool["ranks"])
            pool.setdefault("active", not (pool["held"] or pool["draining"]))
        return pools

    @property
    def connected_workers(self) -> int:
        """Worker ranks of all connected pools."""
        return sum(p["ranks"] for p in self._control.pools())

    def queued_tasks(self) -> int:
        """Tasks the interchange holds for want of a pool with room for them."""
        return int(self._control.command("queued"))

    def connected_blocks(self) -> list[str]:
        """Ids of the blocks with a pool connected now."""
        return sorted({p["block_id"] for p in self._control.pools()})

    def send_node_info(self, pool: dict[str, Any], active: bool) -> None:
        """Put one pool's ``node`` rows into the monitoring database (no-op without monitoring)."""
        radio = self.submit_monitoring_radio
        if radio is not None:
            for row in node_info(pool, self.run_id, active):
                radio.send((MessageType.NODE_INFO, row))
