"""rankpool on a PBS Pro machine with HPE Cray PALS ``mpiexec`` (ALCF Polaris).

Each block is one PBS job of ``NODES_PER_BLOCK`` nodes running ONE pool, started by::

    mpiexec -n 64 --ppn 32 ${PBS_NODEFILE:+--hostfile "$PBS_NODEFILE"} --depth 2 --cpu-bind depth \\
        python -m rankpool.mpi_pool ...

``RANKS_PER_NODE`` counts every MPI rank on a node: rank 0 of the pool, its manager, takes one
slot on the first node, so a block has ``NODES_PER_BLOCK * RANKS_PER_NODE - 1`` worker ranks.
Polaris nodes have 32 cores (64 hardware threads) and 4 GPUs: 32 ranks of depth 2 fill them.

Edit the account, queue, file systems and environment, then run this file on a login node.
Importing it starts nothing: :func:`provider` and :func:`config` build the objects on demand.
"""

from __future__ import annotations

from parsl.config import Config
from parsl.providers import PBSProProvider

from rankpool.launchers import MpiexecLauncher

NODES_PER_BLOCK = 2
RANKS_PER_NODE = 32


def provider() -> PBSProProvider:
    """The PBS Pro provider: one job per block, the pool started with Cray PALS ``mpiexec``."""
    return PBSProProvider(
        account="YOUR_ACCOUNT",
        queue="debug",                                   # "prod" for large runs
        scheduler_options="#PBS -l filesystems=home:eagle",
        select_options="ngpus=4",
        worker_init="module use /soft/modulefiles; module load conda; conda activate YOUR_ENV",
        nodes_per_block=NODES_PER_BLOCK,
        cpus_per_node=64,
        init_blocks=1,
        min_blocks=0,
        max_blocks=1,
        walltime="00:30:00",
        launcher=MpiexecLauncher(flavor="pals", ranks_per_node=RANKS_PER_NODE,
                                 depth=2, cpu_bind="depth"),
    )


def config() -> Config:
    """A Parsl config whose one executor runs every task on the PBS blocks' pools."""
    from parsl.addresses import address_by_interface

    import rankpool

    return Config(executors=[rankpool.ExtremeScaleExecutor(
        label="polaris",
        provider=provider(),
        ranks_per_node=RANKS_PER_NODE,
        address=address_by_interface("bond0"),          # the login node's high-speed interface
    )])


def main() -> None:
    """Run one 4-rank task on Polaris and print the size of its communicator."""
    import parsl

    @parsl.python_app
    def ranks(comm=None, parsl_resource_specification=None):  # type: ignore[no-untyped-def]
        return comm.Get_size()

    with parsl.load(config()):
        print("task communicator size:",
              ranks(parsl_resource_specification={"num_ranks": 4}).result())


if __name__ == "__main__":
    main()
