"""Run directories: one per executor, holding its logs and keys, and where its interchange is."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

from .._version import __version__
from ..private_files import private_dir, write_private

DEFAULT_ROOT = "rankpool-runs"


def make_run_dir(run_dir: str | None = None) -> str:
    """Create and return ``run_dir``, or the next ``rankpool-runs/NNN`` under the working directory.

    Run directories are private (0700, this user's, writable by no one else: see
    :mod:`rankpool.private_files`); one that is not is refused with
    :class:`~rankpool.errors.RunDirError`.
    """
    if run_dir:
        return private_dir(run_dir)
    private_dir(DEFAULT_ROOT)
    taken = [int(n) for n in os.listdir(DEFAULT_ROOT) if n.isdigit()]
    number = max(taken, default=-1) + 1
    while True:
        path = os.path.join(DEFAULT_ROOT, f"{number:03d}")
        try:
            os.mkdir(path, 0o700)
            return private_dir(path)
        except FileExistsError:
            number += 1


#: the file in a run directory that tells tools (``rankpool status``) where the interchange is
INTERCHANGE_INFO = "interchange.json"


def write_interchange_info(run_dir: str, ports: Mapping[str, int], address: str,
                           server_key: str = "") -> str:
    """Write ``<run_dir>/interchange.json`` right after the interchange starts; return its path.

    It holds the interchange's ports (``pool_port``, ``client_port``, ``command_port``; the
    last two listen on loopback only), ``address``, the URL pools connect to, the key file
    pools need when connections are encrypted (``server_key``, else empty), and the host
    and pid of the process that runs the executor, so a reader can tell a stale file from a
    live one. Written 0600 to a temporary name and renamed, so a reader never sees half a file.
    """
    info = {"format": 1, "address": address, **{k: int(v) for k, v in ports.items()},
            "server_key": server_key, "host": socket.gethostname(), "pid": os.getpid(),
            "rankpool": __version__, "started": time.time()}
    path = os.path.join(run_dir, INTERCHANGE_INFO)
    return write_private(path, json.dumps(info, indent=1) + "\n")


def read_interchange_info(run_dir: str) -> dict[str, Any]:
    """The contents of ``<run_dir>/interchange.json``; ValueError when it lacks a port."""
    path = os.path.join(run_dir, INTERCHANGE_INFO)
    with open(path, encoding="utf-8") as fh:
        try:
            info = json.load(fh)
        except ValueError as exc:
            raise ValueError(f"{path} is not JSON: {exc}") from None
    if not isinstance(info, dict) or not all(isinstance(info.get(k), int) and info[k] > 0
                                             for k in ("command_port", "pool_port")):
        raise ValueError(f"{path} does not name the interchange's command_port and pool_port")
    return info
