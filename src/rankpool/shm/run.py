"""A run's names in ``/dev/shm``: run prefixes, the front-end's probe, the segment header
layout, and the sweep of what a run left behind.

Kept apart from :mod:`.arena` (segments, descriptors, NumPy) so that processes that only clean
up, like the interchange, import nothing heavy.
"""

from __future__ import annotations

import os
import re
import secrets

SHM_DIR = "/dev/shm"
#: every segment and probe name starts with this (a receiver opens nothing else)
NAME_PREFIX = "rankpool-"
#: a segment's header (see :mod:`.arena`): its size, the states, and where its fields are (byte
#: offsets: the state, then the generation and the capacity as 64-bit little-endian integers)
HEADER = 64
#: FREE: the sender may reuse it; IN_USE: sent, not yet read; LENT: its reader reads it in place
#: and sets FREE when the last of its views dies
FREE, IN_USE, LENT = 0, 1, 2
STATE_AT, GENERATION_AT, CAPACITY_AT = 8, 16, 24
_RUN_RE = re.compile(r"rankpool-[0-9a-f]{8,32}")


def new_run_prefix() -> str:
    """A fresh run prefix: the names of one run's segments all start with it."""
    return f"{NAME_PREFIX}{secrets.token_hex(6)}"


def check_run_prefix(prefix: str) -> str:
    """``prefix`` when it is a run prefix :func:`new_run_prefix` could have made; else
    ValueError."""
    if not isinstance(prefix, str) or not _RUN_RE.fullmatch(prefix):
        raise ValueError(f"expected a shared-memory run prefix like 'rankpool-0123abcd4567', "
                         f"got {prefix!r}")
    return prefix


def available() -> bool:
    """Whether this host has a writable ``/dev/shm`` (Linux; not macOS)."""
    return os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK | os.X_OK)


def probe_path(prefix: str) -> str:
    """The file whose presence tells a pool rank that it shares ``/dev/shm`` with the front-end."""
    return os.path.join(SHM_DIR, f"{prefix}.host")


def shares_front_end_memory(prefix: str) -> bool:
    """Whether this process can open the front-end's probe: same host, same ``/dev/shm``, same
    user."""
    try:
        fd = os.open(probe_path(prefix), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        return os.fstat(fd).st_uid == os.getuid()  # another user's file is no probe of ours
    finally:
        os.close(fd)


def sweep(prefix: str, only_dead: bool = False) -> list[str]:
    """Unlink the run's segments left in ``/dev/shm`` (and its probe, unless ``only_dead``).

    ``only_dead``: only segments whose owning process has exited and that nobody still has to
    read (state FREE), so that a result in flight from a pool that just died is not cut off.
    Returns the names removed.
    """
    check_run_prefix(prefix)
    removed: list[str] = []
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(prefix + "-") and name != f"{prefix}.host":
            continue
        path = os.path.join(SHM_DIR, name)
        if only_dead and not _dead_and_free(name, path):
            continue
        try:
            os.unlink(path)
            removed.append(name)
        except OSError:
            pass
    return removed


def _dead_and_free(name: str, path: str) -> bool:
    parts = name.rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
        return False
    except ProcessLookupError:
        pass
    except PermissionError:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER)
    except OSError:
        return False
    return len(head) > STATE_AT and head[STATE_AT] == FREE
