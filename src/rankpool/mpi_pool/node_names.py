"""The name of this process's node, as the batch system names it. Imports no MPI: a keeper
(which must never start MPI) names its node too."""

from __future__ import annotations

import os
import socket


def node_name() -> str:
    """This process's node as the batch system names it (Slurm's name for a fake node)."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()
