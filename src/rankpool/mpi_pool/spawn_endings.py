"""Spawned applications under Hydra end one at a time on a node.

Each time a process of the job ends, Hydra's ``mpiexec`` writes its notice (see
:mod:`.hydra_notice`) to the control connection of every process group it still counts as
running. A spawned group whose processes have just ended closes that connection before
``mpiexec`` has read its last words; a notice written to it then fails (``EPIPE``), and
``mpiexec`` gives up on the whole job: the pool dies (``unable to send SIGUSR1 downstream``).
Two spawned applications ending at the same moment are enough, as happens with short ones run
side by side (the benchmark's 200 mixed-width applications lost their pool in most runs).

So the end of a spawned application is a *turn*: its parent takes the node's turn
(:func:`ending_turn`, an abstract Unix socket name bound by one process at a time, released
even if the process dies) before it joins its children's final barrier, which is what lets them
end, and keeps it until they are gone and ``mpiexec`` has had a moment to read their group's
exit. Applications still start and run side by side; only their last moments are serialised.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

from .backoff import Backoff, BackoffConfig

log = logging.getLogger(__name__)

#: how a parent waiting for the turn, or for its children to go, sleeps between looks
WAIT = BackoffConfig(base=1e-3, hot_cap=0.02, idle_cap=0.02, hot_window=1e-6)
#: seconds a turn waits for the children to be gone before it is given up anyway
GONE_WITHIN = 30.0
#: seconds left after they are gone for mpiexec to read their group's exit status
SETTLE = 0.05
#: seconds a parent waits for the turn before it ends without it (the name is public: another
#: user's process could hold it for ever)
TURN_WITHIN = 2 * GONE_WITHIN


class Turn:
    """A node-wide turn, one process at a time: an abstract Unix socket name bound by its
    holder (released even if the holder dies)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.holder: socket.socket | None = None

    def take(self) -> None:
        """Wait for the turn (at most :data:`TURN_WITHIN` seconds: then go on without it)."""
        holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        backoff = Backoff(WAIT)
        deadline = time.monotonic() + TURN_WITHIN
        while True:
            try:
                holder.bind(f"\0{self.name}")
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    holder.close()
                    raise
                if time.monotonic() > deadline:
                    log.warning("the turn %s was held for %.0f s, longer than any spawned "
                                "application of this pool holds it: going on without it",
                                self.name, TURN_WITHIN)
                    break
                backoff.sleep()
        self.holder = holder

    def give_back(self) -> None:
        """Release the turn (nothing if not held)."""
        holder, self.holder = self.holder, None
        if holder is not None:
            holder.close()


def take_ending_turn(proxy: int) -> Turn:
    """Take the ending turn of the node served by Hydra's proxy ``proxy`` (a rank about to end
    itself takes it too: its end is a process end Hydra tells every group of)."""
    turn = Turn(f"rankpool-spawn-ending-{proxy}")
    turn.take()
    return turn


@contextmanager
def ending_turn(proxy: int) -> Iterator[None]:
    """Hold the ending turn of the node served by Hydra's proxy ``proxy``."""
    turn = take_ending_turn(proxy)
    try:
        yield
    finally:
        turn.give_back()


def spawned_below(proxy: int) -> set[int]:
    """Living processes that ``MPI_Comm_spawn`` started in the job of Hydra's proxy ``proxy``
    (on this node: below the proxy itself, or below one ``mpiexec`` started for them)."""
    found: set[int] = set()
    try:
        mpiexec = psutil.Process(proxy).parent()
        children = mpiexec.children(recursive=True) if mpiexec else []
    except psutil.Error:
        return found
    for child in children:
        try:
            if child.status() != psutil.STATUS_ZOMBIE and \
                    child.environ().get("PMI_SPAWNED") == "1":
                found.add(child.pid)
        except psutil.Error:
            continue
    return found


def wait_gone(proxy: int, before: set[int], count: int) -> None:
    """Wait until ``count`` of the spawned processes ``before`` have ended (those of the
    application whose turn it is: the others wait for their own turn to end), then a moment
    for ``mpiexec``."""
    deadline = time.monotonic() + GONE_WITHIN
    backoff = Backoff(WAIT)
    while len(before - spawned_below(proxy)) < count:
        if time.monotonic() > deadline:
            log.warning("%d spawned processes still running %.0f s after their parent "
                        "disconnected", count, GONE_WITHIN)
            return
        backoff.sleep()
    time.sleep(SETTLE)
