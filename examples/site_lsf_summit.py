"""rankpool on an IBM LSF machine with ``jsrun`` (OLCF Summit and its relatives).

Each block is one LSF job of ``NODES_PER_BLOCK`` nodes running ONE pool, started by::

    jsrun --nrs 12 --rs_per_host 6 --tasks_per_rs 1 --cpu_per_rs 7 --gpu_per_rs 1 \\
        --bind packed:7 python -m rankpool.mpi_pool ...

One resource set per rank: 6 ranks per node, each with 7 cores and one GPU. ``RANKS_PER_NODE``
counts every MPI rank on a node, and rank 0 (the pool's manager) takes one of them on the first
node, so a block has ``NODES_PER_BLOCK * RANKS_PER_NODE - 1`` worker ranks (and one GPU of the
first node serves the manager).

Edit the project, queue and environment, then run this file on a login node. Importing it
starts nothing: :func:`provider` and :func:`config` build the objects on demand.
"""

from __future__ import annotations

from parsl.config import Config
from parsl.providers import LSFProvider

from rankpool.launchers import JsrunLauncher

NODES_PER_BLOCK = 2
RANKS_PER_NODE = 6


def provider() -> LSFProvider:
    """The LSF provider: one job per block (``#BSUB -nnodes``), the pool started with ``jsrun``."""
    return LSFProvider(
        project="YOUR_PROJECT",
        queue="batch",
        worker_init="module load python; source YOUR_ENV/bin/activate",
        nodes_per_block=NODES_PER_BLOCK,
        init_blocks=1,
        min_blocks=0,
        max_blocks=1,
        walltime="00:30:00",
        cmd_timeout=60,
        launcher=JsrunLauncher(ranks_per_node=RANKS_PER_NODE, cpus_per_rank=7, gpus_per_rank=1,
                               extra="--bind packed:7"),
    )


def config() -> Config:
    """A Parsl config whose one executor runs every task on the LSF blocks' pools."""
    from parsl.addresses import address_by_interface

    import rankpool

    return Config(executors=[rankpool.ExtremeScaleExecutor(
        label="summit",
        provider=provider(),
        ranks_per_node=RANKS_PER_NODE,
        address=address_by_interface("ib0"),            # reachable from the compute nodes
    )])


def main() -> None:
    """Run one 6-rank task and print the size of its communicator."""
    import parsl

    @parsl.python_app
    def ranks(comm=None, parsl_resource_specification=None):  # type: ignore[no-untyped-def]
        return comm.Get_size()

    with parsl.load(config()):
        print("task communicator size:",
              ranks(parsl_resource_specification={"num_ranks": 6}).result())


if __name__ == "__main__":
    main()
