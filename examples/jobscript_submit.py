"""Job-script mode: Parsl on pools that YOUR batch scripts start (``managed=False``).

    python examples/jobscript_submit.py --scheduler slurm            # then, in another shell:
    RUN_DIR=<printed run dir> sbatch examples/jobscript_slurm.sh     # or: qsub -v RUN_DIR=...

    python examples/jobscript_submit.py --scheduler slurm --submit   # submits the script itself

The executor submits no job. It starts its interchange, writes ``pool_command.sh`` and
``interchange.json`` into its run directory (``<parsl run dir>/<label>``), and queues the
tasks until a pool attaches. Each job running ``srun``/``mpiexec ... sh RUN_DIR/pool_command.sh``
is one more pool; ``executor.pool_command(block_id)`` gives the same command line as a string.
When the workflow ends the executor stops every pool, which ends their jobs.

The provider passed here is never used to submit: with a rankpool launcher it tells the
executor the jobs' shape (nodes and ranks per node), so that submit refuses a task no pool
could hold, and ``pool_command.sh`` shows the matching launch line. Watch the pools with
``rankpool status RUN_DIR`` on this host. Importing this file starts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

import parsl
from parsl.providers import PBSProProvider, SlurmProvider

from rankpool import ExtremeScaleExecutor
from rankpool.launchers import MpiexecLauncher, SrunLauncher

HERE = Path(__file__).resolve().parent


@parsl.python_app
def where(comm=None):
    """Where each rank of a task runs (``results="all"``: every rank's value, in rank order)."""
    import os
    import socket
    node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    return f"rank {comm.Get_rank()} of {comm.Get_size()} on {node}"


@parsl.python_app
def square(x):
    return x * x


def executor(scheduler: str, nodes: int, ranks_per_node: int, address: str) -> ExtremeScaleExecutor:
    """An unmanaged executor whose provider only describes the jobs' shape."""
    provider: SlurmProvider | PBSProProvider
    if scheduler == "slurm":
        provider = SlurmProvider(nodes_per_block=nodes,
                                 launcher=SrunLauncher(ranks_per_node=ranks_per_node, mpi="pmi2"))
    else:
        provider = PBSProProvider(nodes_per_block=nodes, launcher=MpiexecLauncher(
            flavor="pals", ranks_per_node=ranks_per_node))
    return ExtremeScaleExecutor(label="xs", provider=provider, ranks_per_node=ranks_per_node,
                                managed=False, address=address)


def submit_job(scheduler: str, run_dir: str) -> None:
    """Submit the example job script with ``RUN_DIR`` set (what a user would type)."""
    if scheduler == "slurm":
        cmd = ["sbatch", str(HERE / "jobscript_slurm.sh")]
    else:
        cmd = ["qsub", "-v", f"RUN_DIR={run_dir}", str(HERE / "jobscript_pbs.sh")]
    out = subprocess.run(cmd, env={**os.environ, "RUN_DIR": run_dir}, check=True,
                         capture_output=True, text=True).stdout
    print("submitted:", out.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scheduler", choices=("slurm", "pbs"), default="slurm")
    parser.add_argument("--nodes", type=int, default=2, help="nodes per job (default 2)")
    parser.add_argument("--ranks-per-node", type=int, default=32,
                        help="MPI ranks per node, the manager included (default 32)")
    parser.add_argument("--address", default=None,
                        help="address compute nodes reach this host at (default: its hostname)")
    parser.add_argument("--submit", action="store_true",
                        help="submit the example job script too (sbatch or qsub)")
    args = parser.parse_args(argv)
    if args.address is None:
        from parsl.addresses import address_by_hostname
        args.address = address_by_hostname()

    ex = executor(args.scheduler, args.nodes, args.ranks_per_node, args.address)
    with parsl.load(parsl.Config(executors=[ex])):
        run_dir = ex.executor_dir
        print(f"RUN_DIR={run_dir}")
        print("pool command:", ex.pool_command("my-block"))
        print(f"waiting for pools: RUN_DIR={run_dir} sbatch {HERE / 'jobscript_slurm.sh'}"
              if args.scheduler == "slurm" else
              f"waiting for pools: qsub -v RUN_DIR={run_dir} {HERE / 'jobscript_pbs.sh'}")
        if args.submit:
            submit_job(args.scheduler, run_dir)
        wide = where(parsl_resource_specification={"num_ranks": args.nodes * 2,
                                                   "results": "all"})
        squares = [square(i) for i in range(16)]
        print("\n".join(wide.result()))
        print("squares:", [f.result() for f in squares])
    return 0  # leaving the block stops the pools: their jobs end


if __name__ == "__main__":
    raise SystemExit(main())
