"""Blocks of :class:`~rankpool.frontends.parsl.executor.ExtremeScaleExecutor` seen from the
interchange.

The provider knows which jobs exist; only the interchange knows which of them run a pool and
which pools are busy. :class:`BlockControl` joins the two for the executor:

* ``scale_in`` picks idle blocks first (the interchange's ``idle_blocks``), holds each one,
  checks it is still idle, drains it (the pool finishes and exits cleanly) and only then has
  the provider cancel the job; blocks that never connected come next; a block with tasks
  running is cancelled only when forced;
* a watcher thread (only when monitoring is on or ``drain_period`` is set) lists the pools
  every second: new pools get monitoring ``node`` rows, gone ones an inactive row, and a
  block whose pool has run ``drain_period`` seconds is drained so that no task is cut off by
  the job's walltime;
* ``end_blocks`` at shutdown waits for the stopped pools' jobs to end by themselves (every
  rank leaves ``MPI_Finalize``, the launcher exits 0), and cancels only the jobs still running
  after ``EXIT_GRACE`` seconds, saying so in the log.

A drained or stopped pool's job is given the same grace before its job is cancelled: a job
cancelled while its ranks were finalizing would leave MPICH's shared-memory files in
``/dev/shm`` and end as "CANCELLED" instead of "COMPLETED".
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from .starts import StartJudge

if TYPE_CHECKING:
    from .executor import ExtremeScaleExecutor

log = logging.getLogger(__name__)

#: how long scale_in waits for drained pools to leave the interchange
DRAIN_WAIT = 2.0
#: how long the job of a pool that left (drained or stopped) gets to end by itself before the
#: provider cancels it
EXIT_GRACE = 10.0
#: seconds between two looks at the provider's job states while waiting for jobs to end
_STATUS_POLL = 0.2
#: how long the executor's own bookkeeping waits for the interchange to answer a command
COMMAND_TIMEOUT = 3.0


class BlockControl:
    """Scale-in, hold/drain, pool listing and the watcher of one executor."""

    def __init__(self, executor: ExtremeScaleExecutor) -> None:
        self.ex = executor
        #: blocks that had a pool registered at some point (they did start)
        self.connected_ever: set[str] = set()
        self.starts = StartJudge(self)
        self.seen: dict[str, dict[str, Any]] = {}       # pool id -> its last description
        self.first_seen: dict[str, float] = {}          # pool id -> when first listed
        self.drained: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the interchange ------------------------------------------------------------------------
    def command(self, name: str, arg: str = "", timeout: float = 10.0) -> Any:
        """A command to the interchange; raises when it is not running or refuses."""
        client = self.ex._client
        if client is None:
            raise RuntimeError(f"executor {self.ex.label!r} is not started")
        return client.command(name, arg, timeout=timeout)

    def try_command(self, name: str, arg: str = "") -> Any:
        """:meth:`command`, or None when the interchange cannot answer (stopped, lost)."""
        try:
            return self.command(name, arg, timeout=COMMAND_TIMEOUT)
        except Exception as exc:  # zmq errors after stop, timeouts, refusals: nothing to act on
            log.debug("interchange command %r %r failed: %s", name, arg, exc)
            return None

    def pools(self) -> list[dict[str, Any]]:
        """The connected pools, as the ``pools`` command describes them (recorded as seen)."""
        pools = self.try_command("pools")
        if pools is None:
            return []
        self.track(pools)
        return list(pools)

    def refresh_pools(self) -> None:
        self.pools()

    def started_blocks(self) -> set[str]:
        """Blocks that had a pool registered at some point, gone ones included."""
        self.refresh_pools()
        registered = self.try_command("registered_blocks") or []
        with self._lock:
            self.connected_ever.update(registered)
            return set(self.connected_ever)

    def track(self, pools: list[dict[str, Any]]) -> None:
        """Note new and gone pools; monitoring gets their ``node`` rows."""
        now = time.monotonic()
        current = {p["pool_id"]: p for p in pools}
        with self._lock:
            new = [p for pid, p in current.items() if pid not in self.seen]
            gone = [p for pid, p in self.seen.items() if pid not in current]
            for pool in new:
                self.connected_ever.add(pool["block_id"])
                self.first_seen[pool["pool_id"]] = now
            for pool in gone:
                self.first_seen.pop(pool["pool_id"], None)
            self.seen = current
        for pool in new:
            log.info("%s: pool %s of block %s connected: %d worker ranks on %s", self.ex.label,
                     pool["pool_id"], pool["block_id"], pool["ranks"], ",".join(pool["hosts"]))
            self.ex.send_node_info(pool, True)
        for pool in gone:
            self.ex.send_node_info(pool, False)

    def mark_pools_gone(self) -> None:
        """Record every pool seen as inactive (at shutdown)."""
        self.track([])

    # -- hold, release, drain ---------------------------------------------------------------------
    def hold(self, block_id: str) -> list[str]:
        return list(self.command("hold", block_id))

    def release(self, block_id: str) -> list[str]:
        return list(self.command("release", block_id))

    def drain(self, block_id: str) -> list[str]:
        pool_ids = list(self.command("drain", block_id))
        self.drained.add(block_id)
        return pool_ids

    # -- scale in ----------------------------------------------------------------------------------
    def scale_in(self, blocks: int, force: bool = False) -> list[str]:
        """End up to ``blocks`` blocks: idle ones first, then unconnected ones, busy ones if
        forced."""
        ex = self.ex
        live = [b for b, s in list(ex.status_facade.items())
                if not s.terminal and b in ex.blocks_to_job_id]
        if blocks <= 0 or not live:
            return []
        connected = {p["block_id"] for p in self.pools()}
        idle = set(self.try_command("idle_blocks") or [])
        chosen: list[str] = []
        draining: list[str] = []
        for block_id in (b for b in live if b in idle):
            if len(chosen) >= blocks:
                break
            if self._retire_idle(block_id):
                chosen.append(block_id)
                draining.append(block_id)
        for block_id in (b for b in live if b not in connected):
            if len(chosen) >= blocks:
                break
            chosen.append(block_id)
        if force:
            for block_id in (b for b in live if b in connected and b not in chosen):
                if len(chosen) >= blocks:
                    break
                log.warning("%s: scaling in block %s with tasks running (forced)", ex.label,
                            block_id)
                chosen.append(block_id)
        if len(chosen) < blocks:
            log.debug("%s: scale in of %d blocks found %d that can go without cutting off tasks",
                      ex.label, blocks, len(chosen))
        if not chosen:
            return []
        self._wait_gone(draining, DRAIN_WAIT)
        self._wait_jobs_end(draining, EXIT_GRACE)
        return self.cancel(chosen)

    def _retire_idle(self, block_id: str) -> bool:
        """Hold an idle block, check it is still idle, then drain it; False if it got work."""
        if self.try_command("hold", block_id) is None:
            return False
        if block_id not in set(self.try_command("idle_blocks") or []):
            self.try_command("release", block_id)
            return False
        if self.try_command("drain", block_id) is None:
            return False
        self.drained.add(block_id)
        return True

    def _wait_gone(self, block_ids: list[str], timeout: float) -> None:
        if not block_ids:
            return
        deadline = time.monotonic() + timeout
        waiting = set(block_ids)
        while time.monotonic() < deadline:
            pools = self.try_command("pools")
            if pools is None or not waiting & {p["block_id"] for p in pools}:
                return
            time.sleep(0.02)
        log.info("%s: drained blocks %s still connected after %.0f s; cancelling their jobs",
                 self.ex.label, sorted(waiting), timeout)

    def cancel(self, block_ids: list[str]) -> list[str]:
        """Have the provider cancel the jobs of ``block_ids`` that have not ended; return those
        ended."""
        ex = self.ex
        self.starts.cancelled.update(block_ids)  # ended by us: not a failed start
        provider = ex.provider
        if provider is None:
            return []
        jobs = [ex.blocks_to_job_id[b] for b in block_ids]
        states: list[Any]
        try:
            states = list(provider.status(jobs))
        except Exception:  # a provider that cannot tell: cancel them all
            log.warning("%s: provider status failed before cancel", ex.label, exc_info=True)
            states = [None] * len(jobs)
        ended = [b for b, s in zip(block_ids, states) if s is not None and s.terminal]
        to_cancel = [(b, j) for b, j, s in zip(block_ids, jobs, states)
                     if s is None or not s.terminal]
        if to_cancel:
            log.info("%s: cancelling jobs %s of blocks %s", ex.label, [j for _, j in to_cancel],
                     [b for b, _ in to_cancel])
            results = provider.cancel([j for _, j in to_cancel])
            ended += [b for (b, _), ok in zip(to_cancel, results) if ok]
        return ended

    def end_blocks(self, timeout: float = EXIT_GRACE) -> None:
        """At shutdown: wait up to ``timeout`` for the jobs of the stopped pools to end by
        themselves, then cancel the rest."""
        ex = self.ex
        if not ex.managed or ex.provider is None:
            return
        blocks = [b for b, s in list(ex.status_facade.items())
                  if not s.terminal and b in ex.blocks_to_job_id]
        if not blocks:
            return
        self._wait_jobs_end(blocks, timeout)
        try:
            self.cancel(blocks)
        except Exception:
            log.warning("%s: could not cancel blocks %s", ex.label, blocks, exc_info=True)

    def _wait_jobs_end(self, block_ids: list[str], timeout: float) -> None:
        """Wait up to ``timeout`` for the jobs of ``block_ids`` to end; log those that did not."""
        ex = self.ex
        if not block_ids or ex.provider is None:
            return
        deadline = time.monotonic() + timeout
        left = list(block_ids)
        while left:
            try:
                states = ex.provider.status([ex.blocks_to_job_id[b] for b in left])
            except Exception:  # a provider that cannot tell: the caller cancels
                log.debug("%s: provider status failed", ex.label, exc_info=True)
                return
            left = [b for b, s in zip(left, states) if s is None or not s.terminal]
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(_STATUS_POLL)
        if left:
            log.warning("%s: the jobs of blocks %s did not end within %g s after their pools "
                        "stopped; cancelling them", ex.label, left, timeout)

    # -- the watcher -------------------------------------------------------------------------------
    def start_watcher(self, monitoring: bool) -> None:
        """Start the watcher thread when monitoring or ``drain_period`` needs it."""
        if not (monitoring or self.ex.drain_period):
            return
        period = 1.0 if not self.ex.drain_period else min(1.0, max(0.1, self.ex.drain_period / 4))
        self._thread = threading.Thread(target=self._watch, args=(period,), daemon=True,
                                        name="rankpool-parsl-watch")
        self._thread.start()

    def stop_watcher(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def _watch(self, period: float) -> None:
        while not self._stop.wait(period):
            try:
                self.refresh_pools()
                self.drain_expired()
            except Exception:  # a bug here must not end the watching
                log.exception("%s: pool watcher step failed", self.ex.label)

    def drain_expired(self) -> None:
        """Drain every block whose pool has run ``drain_period`` seconds."""
        period = self.ex.drain_period
        if not period:
            return
        now = time.monotonic()
        with self._lock:
            due = {self.seen[pid]["block_id"] for pid, t0 in self.first_seen.items()
                   if now - t0 >= period and pid in self.seen}
        for block_id in sorted(due - self.drained):
            log.info("%s: block %s reached drain_period %g s; draining it", self.ex.label,
                     block_id, period)
            if self.try_command("drain", block_id) is not None:
                self.drained.add(block_id)
