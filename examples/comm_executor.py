"""A simulation driver that offloads work to the ranks it runs on.

    mpiexec -n 5 python examples/comm_executor.py

Rank 0 submits; ranks 1-4 serve. Single-rank tasks and a 4-rank task that receives its own
communicator run side by side.
"""

from mpi4py import MPI

from rankpool import CommExecutor


def simulate(n, comm=None):
    """Every rank of the task contributes ``n``; the root's return value is the result."""
    return comm.allreduce(n)


def main() -> None:
    with CommExecutor(MPI.COMM_WORLD, root=0) as ex:
        if ex is not None:  # rank 0 only; the other ranks serve until it leaves the block
            squares = list(ex.map(pow, range(8), [2] * 8))
            width = min(4, MPI.COMM_WORLD.Get_size() - 1)
            f = ex.requirements(num_ranks=width).submit(simulate, 1)
            f.label = "sim"
            print(f"squares: {squares}")
            print(f"{f.label}: allreduce over {width} ranks = {f.result()}")


if __name__ == "__main__":
    main()
