"""Parsl on MPI pools: ``rankpool.ExtremeScaleExecutor`` in a few lines.

    python examples/parsl_quickstart.py

One local block of 4 worker ranks (started with the bundled ``mpiexec``) runs ordinary Parsl
apps side by side with apps that span several ranks and receive their own communicator.
"""

import parsl

from rankpool import ExtremeScaleExecutor


@parsl.python_app
def square(x):
    """An ordinary 1-rank app: it needs no ``comm`` and no ``parsl_resource_specification``."""
    return x * x


@parsl.python_app
def solve(n, comm=None, parsl_resource_specification={}):
    """A multi-rank app: every rank of the task runs it; rank 0's return value is the result."""
    return comm.allreduce(n)


@parsl.python_app
def where(comm=None):
    """With ``results="all"`` the result is every rank's value, in rank order."""
    import socket
    return f"rank {comm.Get_rank()} of {comm.Get_size()} on {socket.gethostname()}"


def main() -> None:
    config = parsl.Config(executors=[ExtremeScaleExecutor(label="xs", ranks_per_node=4)])
    with parsl.load(config):
        squares = [square(i) for i in range(8)]
        total = solve(1, parsl_resource_specification={"num_ranks": 4})
        ranks = where(parsl_resource_specification={"num_ranks": 2, "results": "all"})
        print("squares:", [f.result() for f in squares])
        print("allreduce over 4 ranks:", total.result())
        print("\n".join(ranks.result()))


if __name__ == "__main__":
    main()
