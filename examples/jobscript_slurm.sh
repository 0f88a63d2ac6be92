#!/bin/bash
# Job-script mode on Slurm: this job runs ONE rankpool pool across its nodes and attaches it
# to an executor started with managed=False (examples/jobscript_submit.py).
#
#   python examples/jobscript_submit.py --scheduler slurm   # prints RUN_DIR, waits for pools
#   RUN_DIR=/path/to/runinfo/000/xs sbatch examples/jobscript_slurm.sh
#
# Submit it as often as you like: each job is one more pool (its block id is the job id).
# The pool leaves, and the job ends, when the executor shuts down; a pool whose executor
# has vanished exits after its heartbeat threshold. Rank 0 of the launch is the pool's
# manager, so 2 nodes x 32 tasks per node give 63 worker ranks.
#
#SBATCH --job-name=rankpool-pool
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=32
#SBATCH --time=00:30:00
#SBATCH --output=rankpool-pool-%j.out
##SBATCH --partition=YOUR_PARTITION
##SBATCH --account=YOUR_ACCOUNT

set -euo pipefail
: "${RUN_DIR:?set RUN_DIR to the run directory of the executor (it holds pool_command.sh)}"

# The same Python environment as the executor's (rankpool's version must match).
# source YOUR_ENV/bin/activate

# pool_command.sh holds the interchange's address and port (and, when connections are
# encrypted, its key file in RUN_DIR/curve); its block id defaults to $SLURM_JOB_ID.
# --mpi: pmi2 for MPICH-based MPIs (the bundled one included), pmix for Open MPI: ask your site.
srun --mpi=pmi2 sh "$RUN_DIR/pool_command.sh"

# Without the file, the command line from executor.pool_command(block_id) works the same:
#   srun --mpi=pmi2 env PARSL_WORKER_BLOCK_ID=7 python -m rankpool.mpi_pool \
#       --interchange tcp://login1:54321 --block-id 7 --run-dir /path/to/runinfo/000/xs
# and so does the bundled MPICH's mpiexec, which starts its ranks with srun by itself:
#   mpiexec -n "$SLURM_NTASKS" -ppn "$SLURM_NTASKS_PER_NODE" sh "$RUN_DIR/pool_command.sh"
