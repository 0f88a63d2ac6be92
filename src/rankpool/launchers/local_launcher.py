"""The default Parsl provider's launcher: the bundled ``mpiexec`` on this machine.

:class:`LocalMpiexecLauncher` starts a block's pool as ``mpiexec -n WORKERS+1`` (see
:func:`local_provider`), with a job script that forwards the provider's ``cancel`` to
``mpiexec`` (Hydra puts ``mpiexec`` in a session of its own, out of reach of the provider's
kill).
"""

from __future__ import annotations

import shlex
from typing import Any

from parsl.launchers.base import Launcher

from .local import local_launch, positive_int
from .mpiexec import find_mpiexec


class LocalMpiexecLauncher(Launcher):
    """Start the pool with ``mpiexec -n WORKERS+1`` on this machine (the default provider's).

    The executor sets ``ranks_per_node`` (worker ranks per node) before the first block; the
    ``tasks_per_node`` a provider passes is not a shape this launcher follows. The job script
    runs ``mpiexec`` in the background and forwards SIGTERM/SIGINT/SIGHUP to it, then exits
    with its status, so ``LocalProvider.cancel`` stops the MPI job and a killed ``mpiexec``
    shows as a failed job in the provider's status.
    """

    def __init__(self, *, ranks_per_node: int | None = None, mpiexec: str | None = None,
                 debug: bool = False) -> None:
        super().__init__(debug=debug)
        if ranks_per_node is not None:
            positive_int("ranks_per_node", ranks_per_node)
        if mpiexec is not None and (not isinstance(mpiexec, str) or not mpiexec.strip()):
            raise ValueError(f"mpiexec must be a program name or path, got {mpiexec!r}")
        self.ranks_per_node = ranks_per_node
        self.mpiexec = mpiexec

    def __call__(self, command: str, tasks_per_node: int, nodes_per_block: int,
                 script_dir: str = "") -> str:
        if self.ranks_per_node is None:
            raise ValueError("LocalMpiexecLauncher.ranks_per_node is not set: give it to the "
                             "launcher or to the executor")
        ranks = self.ranks_per_node * nodes_per_block + 1
        mpiexec = find_mpiexec(self.mpiexec)
        line = " ".join([*map(shlex.quote, local_launch(mpiexec)), f"-n {ranks}", command])
        echo = f"echo {shlex.quote('rankpool launch: ' + line)}\n" if self.debug else ""
        return (f"{echo}{line} &\n"
                "_rankpool_pid=$!\n"
                "trap 'kill -TERM \"$_rankpool_pid\" 2>/dev/null' TERM INT HUP\n"
                "wait \"$_rankpool_pid\"\n"
                "_rankpool_ec=$?\n"
                "if kill -0 \"$_rankpool_pid\" 2>/dev/null; then\n"
                "    wait \"$_rankpool_pid\"\n"
                "    _rankpool_ec=$?\n"
                "fi\n"
                "exit \"$_rankpool_ec\"\n")


def local_provider(*, ranks_per_node: int | None = None, mpiexec: str | None = None,
                   **provider_kwargs: Any) -> Any:
    """A ``LocalProvider`` whose blocks are pools under the bundled ``mpiexec``.

    ``provider_kwargs`` go to ``LocalProvider`` (``init_blocks``, ``min_blocks``,
    ``max_blocks``, ``worker_init``, ...); ``nodes_per_block`` must stay 1.
    """
    from parsl.providers import LocalProvider
    if "launcher" in provider_kwargs:
        raise TypeError("local_provider sets its own launcher; build a LocalProvider instead")
    if provider_kwargs.get("nodes_per_block", 1) != 1:
        raise ValueError("nodes_per_block: a local provider has one node per block")
    return LocalProvider(launcher=LocalMpiexecLauncher(ranks_per_node=ranks_per_node,
                                                       mpiexec=mpiexec), **provider_kwargs)
