"""rankpool inside a Flux instance (``flux alloc`` / ``flux batch``, e.g. on LLNL machines).

Parsl has no Flux provider: run this script inside a Flux allocation, and Parsl's
``LocalProvider`` starts each block from there with ``flux run``, which Flux schedules on the
instance's nodes::

    flux run -n 16 -N 2 --exclusive python -m rankpool.mpi_pool ...

``flux run -n TOTAL -N NODES`` spreads the ranks evenly, ``RANKS_PER_NODE`` per node (Flux
refuses ``--tasks-per-node`` next to ``-n``). ``RANKS_PER_NODE`` counts every MPI rank on a
node; rank 0 (the pool's manager) takes one slot on the first node, so a block has
``NODES_PER_BLOCK * RANKS_PER_NODE - 1`` worker ranks. Add ``-o pmi=...`` through ``extra`` if
your MPI needs a PMI other than Flux's default.

    flux batch -N 4 -t 60m --wrap python examples/site_flux.py

Importing this module starts nothing: :func:`provider` and :func:`config` build on demand.
"""

from __future__ import annotations

from parsl.config import Config
from parsl.providers import LocalProvider

from rankpool.launchers import FluxLauncher

NODES_PER_BLOCK = 2
RANKS_PER_NODE = 8


def provider() -> LocalProvider:
    """Blocks started from inside the Flux instance, each one ``flux run`` of the whole pool."""
    return LocalProvider(
        nodes_per_block=NODES_PER_BLOCK,
        init_blocks=1,
        min_blocks=0,
        max_blocks=2,                                     # two blocks fit in a 4-node instance
        worker_init="source YOUR_ENV/bin/activate",
        launcher=FluxLauncher(ranks_per_node=RANKS_PER_NODE, exclusive=True),
    )


def config() -> Config:
    """A Parsl config whose one executor runs every task on pools scheduled by Flux."""
    from parsl.addresses import address_by_hostname

    import rankpool

    return Config(executors=[rankpool.ExtremeScaleExecutor(
        label="flux",
        provider=provider(),
        ranks_per_node=RANKS_PER_NODE,
        address=address_by_hostname(),                  # this node, as the other nodes see it
    )])


def main() -> None:
    """Run one task on two nodes' worth of ranks and print the size of its communicator."""
    import parsl

    @parsl.python_app
    def ranks(comm=None, parsl_resource_specification=None):  # type: ignore[no-untyped-def]
        return comm.Get_size()

    with parsl.load(config()):
        print("task communicator size:",
              ranks(parsl_resource_specification={"num_ranks": 8}).result())


if __name__ == "__main__":
    main()
