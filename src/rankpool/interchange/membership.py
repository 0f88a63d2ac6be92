"""Pools joining, changing and leaving the interchange: registration (refused when versions,
shape or the pool's start-up do not fit), capacity reports (a degraded or retiring pool is
drained), hold and drain, and the loss of a pool with its in-flight tasks.
"""

from __future__ import annotations

import logging

from .._version import __version__
from ..errors import ProtocolError
from ..protocol.messages import (
    Capacity,
    Drain,
    Lost,
    LostCause,
    RefusalCause,
    Refused,
    Register,
    Registered,
    Stop,
    check_versions,
    version_mismatch,
)
from .endpoints import Endpoints
from .pools import Pool, check_capacity, check_shape

log = logging.getLogger(__name__)


class PoolMembership(Endpoints):
    """The interchange's pool table kept up to date (the loop that calls these:
    :class:`~.interchange.Interchange`)."""

    def on_register(self, identity: bytes, reg: Register) -> None:
        old = self.pools.get(identity)
        if old is not None:
            self.lose(old, "pool registered again (restarted)", LostCause.REGISTERED_AGAIN,
                      tell_pool=False)
        cfg = self.config
        taken = self.pools.id_taken(reg.pool_id)
        if taken:  # the pool that holds the id runs on, and the front-end need not hear of it
            self._throttle.warn("refused a registration from block %r on %s: %s", reg.block_id,
                                ",".join(reg.hosts), taken)
            self._send_pool(identity, Registered(taken, cfg.heartbeat_period,
                                                 cfg.heartbeat_threshold).encode())
            return
        error, refusal = _refusal(reg)
        if refusal is not None:
            self._throttle.warn("refused pool %r of block %r on %s: %s", reg.pool_id,
                                reg.block_id, ",".join(reg.hosts), error)
            self._send_pool(identity, Registered(error, cfg.heartbeat_period,
                                                 cfg.heartbeat_threshold).encode())
            what, ours, theirs = version_mismatch(reg, __version__) or ("", "", "")
            self.to_client(Refused(reg.block_id, reg.pool_id, list(reg.hosts), error, what, ours,
                                   theirs, refusal).encode())
            self.to_client(Lost(reg.block_id, list(reg.hosts), error, [],
                                LostCause.REFUSED).encode())
            return
        pool = Pool.from_register(identity, reg, cfg.prefetch, self._now)
        self.pools.add(pool)
        self.registered_blocks.add(pool.block_id)
        self.room.add(pool)
        self._dirty = True
        self._send_pool(identity, self._welcome)
        log.info("registered pool %r of block %r: hosts %s, worker ranks %s, widest %d, "
                 "rankpool %s, Python %s", pool.pool_id, pool.block_id, ",".join(pool.hosts),
                 pool.node_ranks, pool.widest, pool.rankpool, pool.python)

    def on_capacity(self, pool: Pool, report: Capacity) -> None:
        """A pool's usable ranks changed: fit its record to them; a pool with stuck ranks is
        degraded and drained, so that its block ends and can be replaced by a whole one, and
        so is one that retires; one that lost ranks to deaths serves on, smaller."""
        error = check_capacity(pool, report)
        if error:
            raise ProtocolError(f"capacity report of pool {pool.pool_id!r}: {error}")
        old = pool.widest
        pool.reshape(report, self.config.prefetch)
        self.room.reshape(pool, old)
        self._dirty = True
        if report.lost:
            log.warning("pool %r of block %r on %s lost worker ranks %s (they died)%s; usable "
                        "worker ranks %s, widest task %d", pool.pool_id, pool.block_id,
                        ",".join(pool.hosts), pool.lost,
                        ": it retires" if report.retiring else "", pool.node_ranks, pool.widest)
        if report.retiring and not report.stuck:
            if not pool.draining:
                self.drain(pool)
            return
        if not report.stuck:
            if not report.lost:
                log.info("pool %r of block %r: no rank is stuck any more; worker ranks %s, "
                         "widest %d", pool.pool_id, pool.block_id, pool.node_ranks, pool.widest)
            return
        log.warning("pool %r of block %r on %s is degraded: ranks %s are stuck in tasks that never "
                    "ended; usable worker ranks %s, widest task %d", pool.pool_id, pool.block_id,
                    ",".join(pool.hosts), pool.stuck, pool.node_ranks, pool.widest)
        if not pool.draining:
            self.drain(pool)

    def hold(self, pool: Pool, held: bool) -> None:
        """Stop (or resume) giving a pool new tasks; what it holds runs on."""
        was = pool.available
        pool.held = held
        self.room.set_available(pool, was)
        self._dirty = True

    def drain(self, pool: Pool) -> None:
        """Hold a pool for good and tell it to finish its tasks and leave (it answers Stop)."""
        was = pool.available
        pool.held = pool.draining = True
        self.room.set_available(pool, was)
        self._send_pool(pool.identity, Drain().encode())
        log.info("draining pool %r of block %r (%d tasks in flight)", pool.pool_id, pool.block_id,
                 len(pool.in_flight))

    def lose(self, pool: Pool, reason: str, cause: LostCause, *, tell_pool: bool,
             level: int = logging.WARNING) -> None:
        """Forget a pool and report its in-flight tasks to the front-end as lost (``reason``
        for people, ``cause`` for the front-end's code)."""
        was = pool.available
        pool.gone = True
        self.room.set_available(pool, was)
        self.pools.remove(pool)
        ids = list(pool.in_flight)
        self.known.difference_update(ids)
        self.finished += len(ids)
        pool.in_flight.clear()
        pool.used = 0
        log.log(level, "pool %r of block %r on %s left: %s; %d tasks in flight lost", pool.pool_id,
                pool.block_id, ",".join(pool.hosts), reason, len(ids))
        if tell_pool:
            self._send_pool(pool.identity, Stop(reason).encode())
        self.to_client(Lost(pool.block_id, list(pool.hosts), reason, ids, cause).encode())


def _refusal(reg: Register) -> tuple[str, RefusalCause | None]:
    """Why a registration is refused (the message, and its cause), or ``("", None)``."""
    error = check_versions(reg, __version__)
    if error:
        return error, RefusalCause.VERSION_MISMATCH
    error = check_shape(reg)
    if error:
        return error, RefusalCause.SHAPE
    if reg.init_error:
        return reg.init_error, RefusalCause.INIT_FAILED
    return "", None
