"""rankpool on a Slurm cluster: each block one ``sbatch`` job running ONE pool under ``srun``.

The job script ends with::

    srun --ntasks 32 --ntasks-per-node 16 --nodes 2 --mpi=pmi2 python -m rankpool.mpi_pool ...

``RANKS_PER_NODE`` counts every MPI rank on a node; rank 0 (the pool's manager) takes one slot
on the first node, so a block has ``NODES_PER_BLOCK * RANKS_PER_NODE - 1`` worker ranks.
``exclusive=True`` (the provider's default) gives the job whole nodes, so srun may start
``RANKS_PER_NODE`` ranks on each although Parsl's template asks for one task per node.

``mpi`` names srun's PMI plugin: ``"pmi2"`` suits MPICH-based MPIs, ``"pmix"`` Open MPI and
PMIx builds; ask your site. With the MPICH that ``pip install rankpool[mpich]`` bundles,
``MpiexecLauncher(ranks_per_node=...)`` works too: its Hydra ``mpiexec`` uses srun by itself.

Edit the partition, account and environment, then run this file on a login node. Importing it
starts nothing: :func:`provider` and :func:`config` build the objects on demand.
"""

from __future__ import annotations

from parsl.config import Config
from parsl.providers import SlurmProvider

from rankpool.launchers import SrunLauncher

NODES_PER_BLOCK = 2
RANKS_PER_NODE = 16


def provider() -> SlurmProvider:
    """The Slurm provider: one job per block, the pool started with a single ``srun``."""
    return SlurmProvider(
        partition="YOUR_PARTITION",
        account="YOUR_ACCOUNT",
        nodes_per_block=NODES_PER_BLOCK,
        exclusive=True,
        init_blocks=1,
        min_blocks=0,
        max_blocks=2,
        walltime="00:30:00",
        worker_init="source YOUR_ENV/bin/activate",
        launcher=SrunLauncher(ranks_per_node=RANKS_PER_NODE, mpi="pmi2"),
    )


def config() -> Config:
    """A Parsl config whose one executor runs every task on the Slurm blocks' pools."""
    from parsl.addresses import address_by_hostname

    import rankpool

    return Config(executors=[rankpool.ExtremeScaleExecutor(
        label="slurm",
        provider=provider(),
        ranks_per_node=RANKS_PER_NODE,
        address=address_by_hostname(),                  # the login node, as compute nodes see it
    )])


def main() -> None:
    """Run one task spanning both nodes of a block and print the size of its communicator."""
    import parsl

    @parsl.python_app
    def ranks(comm=None, parsl_resource_specification=None):  # type: ignore[no-untyped-def]
        return comm.Get_size()

    with parsl.load(config()):
        print("task communicator size:",
              ranks(parsl_resource_specification={"num_ranks": RANKS_PER_NODE + 4}).result())


if __name__ == "__main__":
    main()
