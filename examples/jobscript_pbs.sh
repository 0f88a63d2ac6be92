#!/bin/bash
# Job-script mode on PBS Pro / Torque: this job runs ONE rankpool pool across its nodes and
# attaches it to an executor started with managed=False (examples/jobscript_submit.py).
#
#   python examples/jobscript_submit.py --scheduler pbs     # prints RUN_DIR, waits for pools
#   qsub -v RUN_DIR=/path/to/runinfo/000/xs examples/jobscript_pbs.sh
#
# Each job is one more pool (its block id is $PBS_JOBID); it ends when the executor shuts
# down. Rank 0 of the launch is the pool's manager: 2 nodes x 32 ranks give 63 worker ranks.
#
#PBS -N rankpool-pool
#PBS -l select=2:ncpus=32:mpiprocs=32
#PBS -l walltime=00:30:00
#PBS -j oe
##PBS -A YOUR_ACCOUNT
##PBS -q YOUR_QUEUE
##PBS -l filesystems=home:eagle          (ALCF machines name the file systems they need)

set -euo pipefail
: "${RUN_DIR:?set RUN_DIR to the run directory of the executor (qsub -v RUN_DIR=...)}"
cd "${PBS_O_WORKDIR:-.}"

# The same Python environment as the executor's (rankpool's version must match).
# module load YOUR_MODULES; source YOUR_ENV/bin/activate

NODES=$(sort -u "$PBS_NODEFILE" | wc -l)
RANKS_PER_NODE=32

# HPE Cray PALS mpiexec (Polaris, Aurora, Cray EX with PBS): --ppn, --hostfile, --depth
mpiexec -n $((NODES * RANKS_PER_NODE)) --ppn "$RANKS_PER_NODE" --hostfile "$PBS_NODEFILE" \
    --depth 1 --cpu-bind depth sh "$RUN_DIR/pool_command.sh"

# MPICH Hydra or Intel MPI instead:
#   mpiexec -n $((NODES * RANKS_PER_NODE)) -ppn "$RANKS_PER_NODE" -hostfile "$PBS_NODEFILE" \
#       sh "$RUN_DIR/pool_command.sh"
# Open MPI (reads the PBS allocation itself):
#   mpirun -np $((NODES * RANKS_PER_NODE)) --map-by ppr:"$RANKS_PER_NODE":node \
#       sh "$RUN_DIR/pool_command.sh"
