"""Diagnosing blocks that ended before their pool registered, and the run's record of them.

The front-end that launched a block calls :func:`diagnose` when the block's job (or its
launch command) ended while no pool of it had registered. The diagnosis reads, in order:
the pool's own record (a pool that gave up on the interchange writes one, see
:func:`rankpool.protocol.starts.pool_record_path`), the tail of the job's stderr and stdout,
and the tail of the pool's log (unless the pool's record says why). A keeper's line in the
output that its rank died before the pool started makes that the cause
(:attr:`~rankpool.protocol.starts.StartCause.RANK_DIED`), and is repeated last.
:func:`record` appends the result to ``<run dir>/failed_starts.json``, which ``rankpool
status`` shows (:func:`read_failures`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence

from ..private_files import write_private
from ..protocol.starts import (
    FAILED_STARTS,
    RANK_DIED_WORDS,
    FailedStart,
    StartCause,
    pool_record_path,
)

log = logging.getLogger(__name__)

#: the most lines, and characters, kept from the end of each file a diagnosis reads
TAIL_LINES = 15
TAIL_CHARS = 2000
#: records kept in failed_starts.json (the oldest go first)
KEEP = 100


def tail(path: str | None, lines: int = TAIL_LINES, chars: int = TAIL_CHARS) -> str:
    """The last non-blank ``lines`` lines of a text file (at most ``chars`` characters), or ""."""
    if not path:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 8 * chars))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    kept = [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(kept)[-chars:]


def diagnose(block_id: str, job_id: str, *, run_dir: str = "", state: str = "",
             exit_code: int | None = None, message: str = "",
             outputs: Sequence[tuple[str, str | None]] = ()) -> FailedStart:
    """Why block ``block_id`` ended before its pool registered, from what it left.

    ``state``, ``exit_code`` and ``message`` are what the provider says of the job;
    ``outputs`` names the job's output files (``("stderr", path)``, ...), read from their ends;
    ``run_dir`` is where the pool's record and log would be.
    """
    cause = StartCause.JOB_ENDED
    parts = [message.strip()] if message and message.strip() else []
    own = _pool_record(run_dir, block_id) if run_dir else None
    if own is not None:  # the pool said why itself: its log would only repeat it
        cause = own.cause
        parts.append(own.detail)
    deaths: list[str] = []  # what keepers said of ranks that died as the pool started
    for name, path in outputs:
        text = tail(path)
        if text:
            parts.append(f"{name}:\n{_indent(text)}")
            deaths += [line.strip() for line in text.splitlines() if RANK_DIED_WORDS in line]
    if run_dir and own is None:
        text = tail(os.path.join(run_dir, f"pool-{block_id}.log"))
        if text:
            parts.append(f"pool log:\n{_indent(text)}")
    if len(parts) == (1 if message.strip() else 0):
        parts.append("(the job left no output)")
    if deaths and own is None:
        # named again last: other ranks' and the launcher's lines follow the keeper's in the
        # output, and `rankpool status` shows the last lines of a diagnosis
        cause = StartCause.RANK_DIED
        parts.append("why:\n" + _indent("\n".join(dict.fromkeys(deaths))))
    return FailedStart(block_id, str(job_id), cause, state, exit_code, "\n".join(parts))


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())


def _pool_record(run_dir: str, block_id: str) -> FailedStart | None:
    path = pool_record_path(run_dir, block_id)
    try:
        with open(path, encoding="utf-8") as fh:
            return FailedStart.from_json(json.load(fh))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("unreadable pool record %s: %s", path, exc)
        return None


def record(run_dir: str, failure: FailedStart) -> None:
    """Append ``failure`` to ``<run_dir>/failed_starts.json`` (rewritten whole, then renamed)."""
    if not run_dir:
        return
    kept = [f.to_json() for f in read_failures(run_dir)][-(KEEP - 1):] + [failure.to_json()]
    path = os.path.join(run_dir, FAILED_STARTS)
    try:
        write_private(path, json.dumps(kept, indent=1))
    except OSError as exc:  # RunDirError included
        log.warning("could not record the failed start of block %s in %s: %s",
                    failure.block_id, path, exc)


def read_failures(run_dir: str) -> list[FailedStart]:
    """The failed starts recorded in ``run_dir``, oldest first (none when there is no file)."""
    path = os.path.join(run_dir, FAILED_STARTS)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("unreadable %s: %s", path, exc)
        return []
    out = []
    for item in data if isinstance(data, list) else []:
        try:
            out.append(FailedStart.from_json(item))
        except ValueError as exc:
            log.warning("skipped a record in %s: %s", path, exc)
    return out
