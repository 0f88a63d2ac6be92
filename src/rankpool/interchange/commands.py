"""The interchange's command set, answered on its command socket.

The front-end uses these to scale and to retire blocks: it asks which blocks are idle, holds
or drains a block before its provider cancels it, and stops the interchange at shutdown.
Every command's value is JSON-able; a bad command raises :class:`CommandError`, which the
interchange sends back as the reply's ``error``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ProtocolError, RankPoolError
from ..protocol.messages import Command, Reply, decode_message
from .pools import Pool

if TYPE_CHECKING:
    from .interchange import Interchange


log = logging.getLogger(__name__)


class CommandError(RankPoolError):
    """A command the interchange cannot carry out; its text is the reply's error."""


def _pools(ix: Interchange, arg: str) -> list[dict[str, Any]]:
    return [p.describe() for p in ix.pools]


def _outstanding(ix: Interchange, arg: str) -> int:
    return len(ix.known)


def _queued(ix: Interchange, arg: str) -> int:
    return len(ix.queue)


def _finished(ix: Interchange, arg: str) -> int:
    return ix.finished


def _registered_blocks(ix: Interchange, arg: str) -> list[str]:
    """Blocks that had a pool registered at some point (so did start), gone ones included."""
    return sorted(ix.registered_blocks)


def _idle_blocks(ix: Interchange, arg: str) -> list[str]:
    return sorted({p.block_id for p in ix.pools if not p.in_flight}
                  - {p.block_id for p in ix.pools if p.in_flight})


def _of_block(ix: Interchange, block_id: str) -> list[Pool]:
    pools = ix.pools.of_block(block_id)
    if not pools:
        raise CommandError(f"no pool of block {block_id!r} is connected")
    return pools


def _hold(ix: Interchange, arg: str) -> list[str]:
    pools = _of_block(ix, arg)
    for pool in pools:
        ix.hold(pool, True)
    return [p.pool_id for p in pools]


def _release(ix: Interchange, arg: str) -> list[str]:
    pools = _of_block(ix, arg)
    for pool in pools:
        if pool.draining:
            raise CommandError(f"pool {pool.pool_id!r} of block {arg!r} is draining; "
                               f"it cannot be released")
    for pool in pools:
        ix.hold(pool, False)
    return [p.pool_id for p in pools]


def _drain(ix: Interchange, arg: str) -> list[str]:
    pools = _of_block(ix, arg)
    for pool in pools:
        if not pool.draining:
            ix.drain(pool)
    return [p.pool_id for p in pools]


def _stop(ix: Interchange, arg: str) -> bool:
    return True  # the interchange stops once the reply is out


COMMANDS: dict[str, Callable[[Interchange, str], Any]] = {
    "pools": _pools, "outstanding": _outstanding, "queued": _queued, "finished": _finished,
    "idle_blocks": _idle_blocks, "registered_blocks": _registered_blocks,
    "hold": _hold, "release": _release, "drain": _drain, "stop": _stop,
}


def run_command(ix: Interchange, name: str, arg: str) -> Any:
    """Carry out one command and return its value."""
    fn = COMMANDS.get(name)
    if fn is None:
        raise CommandError(f"unknown command {name!r:.60}; known commands are {sorted(COMMANDS)}")
    return fn(ix, arg)


def answer(ix: Interchange, header: dict[str, Any], extra: Sequence[object]) -> Reply:
    """The reply to one message on the command socket: a value, or an error saying why not."""
    name = header.get("name")
    name = name if isinstance(name, str) else ""
    try:
        msg = decode_message(header)
        if not isinstance(msg, Command) or extra:
            raise ProtocolError(f"expected one command frame, got {header['k']!r:.40} "
                                f"with {len(extra)} more frames")
        return Reply(name, run_command(ix, msg.name, msg.arg), "")
    except (ProtocolError, CommandError) as exc:
        log.warning("command %r refused: %s", name, exc)
        return Reply(name, None, str(exc))
