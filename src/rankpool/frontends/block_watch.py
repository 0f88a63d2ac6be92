"""The watch over an :class:`~.executor.Executor`'s blocks, in the ``rankpool-blocks`` thread.

* A local block that exits after its pool registered is replaced, at most ``MAX_RESTARTS``
  times; one more breaks the executor.
* A block that ends before its pool registers is a failed start: diagnosed, logged and
  recorded. After ``max_failed_starts`` of them in a row the executor breaks with the cause
  (:class:`~rankpool.errors.BlockStartFailed`).

The watch lasts from the executor's start until its close begins to stop the pools
(:meth:`BlockWatch.close`). That includes a ``shutdown(wait=True)`` waiting for the pending
futures, and the close of an executor nobody holds any more: a block that dies then is
replaced, or the executor breaks, and the pending futures end either way. It holds what the
watching needs, never the executor.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from ..errors import BlockStartFailed
from ..launchers.failed_starts import record
from ..launchers.local import LocalBlocks, exit_meaning
from ..launchers.provider_blocks import ProviderBlocks
from ..protocol.starts import FailedStart

if TYPE_CHECKING:
    from .client import InterchangeClient
    from .engine import Engine

log = logging.getLogger(__name__)

#: local blocks replaced after dying, at most
MAX_RESTARTS = 5
#: seconds between two looks at the blocks
PERIOD = 0.1


class BlockWatch:
    """Watches the blocks of one executor: ``blocks`` (local) or ``provider_blocks``."""

    def __init__(self, engine: Engine, client: InterchangeClient, blocks: LocalBlocks | None,
                 provider_blocks: ProviderBlocks | None, run_dir: str,
                 max_failed_starts: int) -> None:
        self.engine = engine
        self.client = client
        self.blocks = blocks
        self.provider_blocks = provider_blocks
        self.run_dir = run_dir
        self.max_failed_starts = max_failed_starts
        self.restarts = 0
        self.failed_starts = 0  # in a row
        self._closing = threading.Event()
        self._lock = threading.Lock()  # a look and the close never overlap
        self._thread = threading.Thread(target=self._run, name="rankpool-blocks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop watching, before the pools are stopped: their ends are no failure then.
        Returns once no look at the blocks is under way (none starts a block after this)."""
        with self._lock:
            self._closing.set()

    def _run(self) -> None:
        while not self._closing.wait(PERIOD):
            with self._lock:
                if self._closing.is_set() or self.engine.broken is not None:
                    return
                try:
                    if self.blocks is not None:
                        self._watch_local(self.blocks)
                    elif self.provider_blocks is not None:
                        self._watch_provider(self.provider_blocks)
                except Exception:  # a bug here must not end the watching
                    log.exception("block watcher step failed")

    def _registered(self) -> set[str] | None:
        """Blocks that had a pool registered (the interchange keeps them all); None when the
        interchange cannot say (stopped, at the program's exit, or lost): judge nothing then."""
        try:
            return set(self.client.command("registered_blocks", timeout=5.0))
        except Exception:
            return None

    def _watch_local(self, blocks: LocalBlocks) -> None:
        for block_id, code in blocks.exited().items():
            registered = self._registered()
            if registered is None:
                return
            if block_id not in registered:
                if self._failed_start(blocks.failed_start(block_id, code)):
                    return
                blocks.start()
                continue
            self.failed_starts = 0
            log.error("block %s exited with code %s (%s); starting another (%d of at most %d); "
                      "see %s", block_id, code, exit_meaning(code), self.restarts + 1,
                      MAX_RESTARTS, blocks.output(block_id))
            if self.engine.plane is not None:
                self.engine.plane.sweep_dead()
            if self.restarts >= MAX_RESTARTS:
                self.engine.break_down(f"block {block_id} exited with code {code}, and "
                                       f"{MAX_RESTARTS} blocks were already replaced")
                return
            self.restarts += 1
            blocks.start()

    def _watch_provider(self, blocks: ProviderBlocks) -> None:
        if not blocks.waiting:
            return  # every block's pool registered: their later ends are ManagerLost's
        registered = self._registered()
        if registered is None:
            return
        for block_id in registered & blocks.waiting:
            blocks.started(block_id)
            self.failed_starts = 0
        for block_id in blocks.ended():
            if block_id in registered:  # registered just before its job ended
                continue
            if self._failed_start(blocks.failed_start(block_id)):
                blocks.stop()
                return
            blocks.start()

    def _failed_start(self, failure: FailedStart) -> bool:
        """Log and record a block that ended before its pool registered; True when that was
        one too many in a row and the executor is now broken."""
        self.failed_starts += 1
        log.error("%s", failure.message())
        record(self.run_dir, failure)
        if self.failed_starts < self.max_failed_starts:
            return False
        error = BlockStartFailed(failure.block_id, failure.job_id, failure.cause,
                                 failure.detail, self.failed_starts)
        self.engine.break_down(str(error), error)
        return True
