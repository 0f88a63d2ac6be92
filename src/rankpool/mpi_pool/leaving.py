"""Why rank 0 leaves its loop, and the record a pool leaves when it never served."""

from __future__ import annotations

import json
import logging

from ..private_files import write_private
from ..protocol.starts import FailedStart, StartCause, pool_record_path
from .config import PoolConfig

log = logging.getLogger(__name__)


class PoolLeaves(Exception):
    """Rank 0 ends its loop; the message says why. ``finish``: the workers run what they
    already hold first (the pool drained, or retires)."""

    def __init__(self, reason: str, finish: bool = False) -> None:
        super().__init__(reason)
        self.finish = finish


class PoolRefused(PoolLeaves):
    """The interchange refused the pool's registration: the pool exits with an error."""


class PoolUnreachable(PoolLeaves):
    """The interchange never answered the pool's registration: the pool exits with an error."""


def write_start_record(cfg: PoolConfig, cause: StartCause, detail: str) -> None:
    """Leave ``<run dir>/start-<block>.json`` for the executor: why this pool never served."""
    path = pool_record_path(cfg.run_dir, cfg.block_id)
    record = FailedStart(cfg.block_id, "", cause, detail=f"pool {cfg.pool_id}: {detail}")
    try:
        write_private(path, json.dumps(record.to_json()))
    except OSError as exc:  # RunDirError included
        log.warning("could not write %s: %s", path, exc)
