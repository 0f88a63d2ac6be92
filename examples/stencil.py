"""A domain-decomposed NumPy stencil on 4 ranks with halo exchange, checked against a serial run.

    python examples/stencil.py [--size 96] [--steps 50] [--ranks 4]

The 2-D heat equation on a square grid with fixed (zero) boundary values, stepped explicitly
with the 5-point stencil. One task on ``--ranks`` ranks splits the grid into horizontal
strips, one per rank. Each rank keeps one ghost row above and below its strip. Before every
step, neighbours swap their edge rows with ``Sendrecv``: the halo exchange. At the end,
rank 0 gathers the strips. The driver compares the result with the same computation done
serially in this process. The arithmetic is identical, so the two agree exactly.

The task talks only to its own communicator, ``comm``. Its ranks are numbered 0..size-1
whatever pool ranks it was placed on.
"""

from __future__ import annotations

import argparse

import numpy as np

from rankpool import Executor

ALPHA = 0.2  # diffusion number; explicit 2-D steps are stable below 0.25


def initial(n: int) -> np.ndarray:
    """A hot square in the middle of a cold plate, zero on the boundary."""
    u = np.zeros((n, n))
    u[n // 4:3 * n // 4, n // 4:3 * n // 4] = 1.0
    return u


def step(u: np.ndarray) -> np.ndarray:
    """One explicit step on the interior of ``u``; row 0 and row -1 are read, not written."""
    new = u.copy()
    new[1:-1, 1:-1] = u[1:-1, 1:-1] + ALPHA * (
        u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:] - 4.0 * u[1:-1, 1:-1])
    return new


def serial(n: int, steps: int) -> np.ndarray:
    u = initial(n)
    for _ in range(steps):
        u = step(u)
    return u


def heat(n: int, steps: int, comm=None) -> np.ndarray | None:
    """Every rank of the task runs this on its strip; rank 0 returns the whole grid."""
    from mpi4py import MPI

    rank, size = comm.Get_rank(), comm.Get_size()
    lo, hi = rank * n // size, (rank + 1) * n // size        # my rows of the global grid
    u = np.zeros((hi - lo + 2, n))                            # plus one ghost row each side
    u[1:-1] = initial(n)[lo:hi]
    up = rank - 1 if rank > 0 else MPI.PROC_NULL               # no neighbour: a no-op exchange
    down = rank + 1 if rank < size - 1 else MPI.PROC_NULL
    for _ in range(steps):
        # halo exchange: my first row goes up while the row below mine comes in, and back
        comm.Sendrecv(u[1], dest=up, recvbuf=u[-1], source=down)
        comm.Sendrecv(u[-2], dest=down, recvbuf=u[0], source=up)
        u = step(u)
        if rank == 0:
            u[1] = 0.0          # the grid's top boundary row stays fixed
        if rank == size - 1:
            u[-2] = 0.0         # and so does its bottom row
    strips = comm.gather(u[1:-1], root=0)
    return np.vstack(strips) if rank == 0 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96, help="grid points per side")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--ranks", type=int, default=4)
    args = parser.parse_args(argv)

    with Executor(max_ranks=args.ranks) as ex:
        future = ex.requirements(num_ranks=args.ranks).submit(heat, args.size, args.steps)
        reference = serial(args.size, args.steps)   # computed here while the pool works
        parallel = future.result()
    diff = float(np.max(np.abs(parallel - reference)))
    print(f"{args.size}x{args.size} grid, {args.steps} steps on {args.ranks} ranks: "
          f"total heat {parallel.sum():.6f} (serial {reference.sum():.6f})")
    print(f"largest difference from the serial computation: {diff:.1e}")
    return 0 if diff == 0.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
