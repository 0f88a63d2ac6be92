"""A comm-aware function: a distributed norm with ``allreduce``, checked against NumPy.

    python examples/comm_allreduce.py

``rankpool.Executor`` starts a local pool of 4 worker ranks. ``norm`` runs on 4 of them at once.
It receives the task's communicator as its ``comm`` parameter, builds its own slice of a
vector (nothing large travels), and sums the squares over the task's ranks:

* ``comm.allreduce(x)`` (lower case) reduces any picklable Python object;
* ``comm.Allreduce(send, recv)`` (upper case) reduces NumPy buffers without pickling.

``results="all"`` returns every rank's value, in rank order. Here every rank holds the
same total, which shows the reduction reached each of them.
"""

from __future__ import annotations

import numpy as np

from rankpool import Executor

N = 1_000_003  # vector length; not a multiple of the rank count, on purpose


def chunk(rank: int, size: int, n: int = N) -> np.ndarray:
    """This rank's contiguous slice of the vector v[i] = sin(i)."""
    lo, hi = rank * n // size, (rank + 1) * n // size
    return np.sin(np.arange(lo, hi, dtype=np.float64))


def norm(comm=None) -> float:
    """||v||, with each rank of the task summing the squares of its own slice."""
    local = chunk(comm.Get_rank(), comm.Get_size())
    return float(np.sqrt(comm.allreduce(float(local @ local))))


def norm_buffers(comm=None) -> float:
    """The same with NumPy buffers: ``Allreduce`` sums in place, no pickling."""
    from mpi4py import MPI

    local = chunk(comm.Get_rank(), comm.Get_size())
    total = np.zeros(1)
    comm.Allreduce(np.array([local @ local]), total, op=MPI.SUM)
    return float(np.sqrt(total[0]))


def where(comm=None) -> tuple[int, int, float]:
    """Rank, size and the reduced sum of squares, as each rank of the task sees them."""
    local = chunk(comm.Get_rank(), comm.Get_size())
    return comm.Get_rank(), comm.Get_size(), comm.allreduce(float(local @ local))


def main() -> None:
    serial = float(np.linalg.norm(chunk(0, 1)))
    with Executor(max_ranks=4) as ex:
        four = ex.requirements(num_ranks=4)
        by_objects = four.submit(norm).result()
        by_buffers = four.submit(norm_buffers).result()
        two = ex.requirements(num_ranks=2).submit(norm).result()
        every = ex.requirements(num_ranks=4, results="all").submit(where).result()
    print(f"serial NumPy norm:          {serial:.12f}")
    print(f"allreduce on 4 ranks:       {by_objects:.12f}")
    print(f"Allreduce (buffers), 4:     {by_buffers:.12f}")
    print(f"allreduce on 2 ranks:       {two:.12f}")
    for rank, size, total in every:
        print(f"  rank {rank} of {size} holds sum of squares {total:.6f}")
    worst = max(abs(v - serial) for v in (by_objects, by_buffers, two)) / serial
    print(f"largest relative difference from serial: {worst:.1e}")
    assert worst < 1e-12, worst


if __name__ == "__main__":
    main()
