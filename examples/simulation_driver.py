"""An MPI simulation driver that offloads its analysis to a ``CommExecutor`` and writes HDF5.

    mpiexec -n 8 python examples/simulation_driver.py [--out simulation.h5] [--steps 400]

The program splits ``MPI.COMM_WORLD`` in two (with ``-n 8``)::

    world ranks 0-3   the simulation: 1-D diffusion on a periodic domain, halo exchange
    world ranks 4-7   the analysis pool: worker ranks of a CommExecutor
    world rank 0      belongs to both: rank 0 of the simulation, and the pool's root, which
                      submits tasks while the pool's manager runs in a thread beside it

Every ``--every`` steps the simulation gathers its field on rank 0. Rank 0 submits two
analysis tasks and steps on without waiting for them:

* ``spectrum`` (1 rank): the power spectrum of the field, with NumPy's FFT;
* ``moments`` (2 ranks): mean, variance, minimum and maximum, each rank taking half of the
  field and combining with ``allreduce`` over the task's own communicator.

At the end rank 0 collects the results and writes them to an HDF5 file with h5py: datasets
``step``, ``field``, ``spectrum``, ``mean``, ``variance``, ``min``, ``max`` (one row per
snapshot). Diffusion smooths the field, so the variance falls and the spectrum loses its
high wavenumbers. The run checks both before it exits.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import Future

import numpy as np
from mpi4py import MPI

from rankpool import CommExecutor

ALPHA = 0.25  # diffusion number of the explicit scheme (stable up to 0.5 in 1-D)

#: one snapshot: its step, the field, and the futures of its two analysis tasks
Snapshot = tuple[int, np.ndarray, Future, Future]


def spectrum(field: np.ndarray) -> np.ndarray:
    """Power per wavenumber (a 1-rank analysis task)."""
    return np.abs(np.fft.rfft(field - field.mean())) ** 2 / field.size


def moments(field: np.ndarray, comm=None) -> dict[str, float]:
    """Mean, variance, min and max of ``field``: each rank of the task reduces its own part
    (a multi-rank analysis task)."""
    part = np.array_split(field, comm.Get_size())[comm.Get_rank()]
    n = comm.allreduce(part.size)
    total = comm.allreduce(float(part.sum()))
    mean = total / n
    squares = comm.allreduce(float(((part - mean) ** 2).sum()))
    return {"mean": mean, "variance": squares / n,
            "min": comm.allreduce(float(part.min()), op=MPI.MIN),
            "max": comm.allreduce(float(part.max()), op=MPI.MAX)}


def simulate(sim: MPI.Intracomm, points: int, steps: int, every: int,
             ex: CommExecutor | None) -> list[Snapshot]:
    """Run the simulation on ``sim``; rank 0 (which holds ``ex``) submits the analysis."""
    rank, size = sim.Get_rank(), sim.Get_size()
    local = points // size
    x = np.arange(rank * local, (rank + 1) * local)
    rng = np.random.default_rng(1234 + rank)
    u = np.zeros(local + 2)                                    # one ghost cell each side
    u[1:-1] = np.sin(2 * np.pi * 3 * x / points) + 0.5 * rng.standard_normal(local)
    left, right = (rank - 1) % size, (rank + 1) % size         # periodic neighbours
    field = np.empty(points) if rank == 0 else None
    submitted = []
    for step in range(steps + 1):
        if step % every == 0:
            sim.Gather(u[1:-1], field, root=0)
            if ex is not None:
                assert field is not None
                snapshot = field.copy()                        # the task keeps this one
                submitted.append((step, snapshot, ex.submit(spectrum, snapshot),
                                  ex.requirements(num_ranks=2).submit(moments, snapshot)))
        if step == steps:
            break
        sim.Sendrecv(u[1:2], dest=left, recvbuf=u[-1:], source=right)
        sim.Sendrecv(u[-2:-1], dest=right, recvbuf=u[0:1], source=left)
        u[1:-1] += ALPHA * (u[:-2] - 2.0 * u[1:-1] + u[2:])
    return submitted


def write_hdf5(path: str, submitted: list[Snapshot], attrs: dict[str, object]) -> None:
    """Wait for every analysis task and store the snapshots, one row each."""
    import h5py

    rows = [(step, field, spec.result(), mom.result()) for step, field, spec, mom in submitted]
    with h5py.File(path, "w") as h5:
        h5["step"] = np.array([row[0] for row in rows])
        h5["field"] = np.stack([row[1] for row in rows])
        h5["spectrum"] = np.stack([row[2] for row in rows])
        for key in ("mean", "variance", "min", "max"):
            h5[key] = np.array([row[3][key] for row in rows])
        h5.attrs.update(attrs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="simulation.h5", help="HDF5 file to write")
    parser.add_argument("--points", type=int, default=4096, help="grid points")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--every", type=int, default=100, help="steps between snapshots")
    args = parser.parse_args(argv)

    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()
    if size < 4:
        if rank == 0:
            print("run with at least 4 ranks, e.g. mpiexec -n 8", file=sys.stderr)
        return 2
    n_sim = size // 2
    if args.points % n_sim:
        raise SystemExit(f"--points must be a multiple of the {n_sim} simulation ranks")
    in_sim = rank < n_sim
    in_pool = rank == 0 or not in_sim
    sim = world.Split(0 if in_sim else MPI.UNDEFINED, rank)
    pool = world.Split(0 if in_pool else MPI.UNDEFINED, rank)

    if in_pool:
        with CommExecutor(pool, root=0) as ex:   # ranks 4-7 serve inside this line
            if ex is not None:                    # world rank 0
                submitted = simulate(sim, args.points, args.steps, args.every, ex)
                write_hdf5(args.out, submitted, {
                    "points": args.points, "steps": args.steps, "alpha": ALPHA,
                    "simulation_ranks": n_sim, "analysis_ranks": size - n_sim})
    else:
        simulate(sim, args.points, args.steps, args.every, None)
    for comm in (sim, pool):
        if comm != MPI.COMM_NULL:
            comm.Free()

    if rank == 0:
        return report(args.out)
    return 0


def report(path: str) -> int:
    """Print what the file holds and check that diffusion did what it should."""
    import h5py

    with h5py.File(path, "r") as h5:
        steps, variance, power = h5["step"][:], h5["variance"][:], h5["spectrum"][:]
        print(f"wrote {path}: {len(steps)} snapshots, simulation on {h5.attrs['simulation_ranks']}"
              f" ranks, analysis on {h5.attrs['analysis_ranks']}")
        for step, var, p in zip(steps, variance, power):
            print(f"  step {step:4d}: variance {var:.4f}, high-wavenumber power {p[64:].sum():.3e}")
    smoother = bool(np.all(np.diff(variance) < 0) and power[-1, 64:].sum() < power[0, 64:].sum())
    print("diffusion smoothed the field:", smoother)
    return 0 if smoother else 1


if __name__ == "__main__":
    raise SystemExit(main())
