"""A pool rank that dies as the pool starts, for the tests of failed starts: put this folder
on ``PYTHONPATH`` and set ``RANKPOOL_TEST_DIE_AT_START=RANK:HOW``. The pool rank ``RANK``
(as ``PMI_RANK`` or Slurm's ``SLURM_PROCID`` numbers it) ends right after its keeper forked
it, before ``MPI_Init``: with ``HOW`` ``exitN``, status N; else of the signal named ``HOW``.
Every other process (its keeper, the other ranks, the interchange) runs as usual."""

import os
import signal

_SETTING = os.environ.get("RANKPOOL_TEST_DIE_AT_START", "")
_RANK = os.environ.get("PMI_RANK", os.environ.get("SLURM_PROCID"))

if _SETTING and _SETTING.split(":")[0] == _RANK:
    import rankpool.mpi_pool.keeper as keeper

    _keep = keeper.keep
    _how = _SETTING.split(":")[1]

    def _keep_then_die() -> object:
        link = _keep()  # the keeper never returns from it: this is the rank
        if link is not None:
            if _how.startswith("exit"):
                os._exit(int(_how[4:]))
            os.kill(os.getpid(), getattr(signal, _how))
        return link

    keeper.keep = _keep_then_die
