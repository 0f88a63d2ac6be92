"""Quickstart: a Parsl workflow on a local MPI pool, with 1-rank and 4-rank tasks side by side.

    python examples/quickstart.py [--samples N] [--quiet]

``rankpool.ExtremeScaleExecutor`` starts one local block: an MPI pool of 4 worker ranks (plus
rank 0, its manager) under the bundled ``mpiexec``. Two kinds of Parsl apps estimate pi:

* ``monte_carlo`` is an ordinary app. It runs on one worker rank and needs no communicator.
* ``midpoint`` asks for ``num_ranks=4``. Every rank of the task runs it, each one integrates
  its own slice, and ``comm.allreduce`` adds the slices. The return value of rank 0 is the
  task's result.

A progress bar (``rankpool.frontends.progress``, on stderr) counts the tasks as they finish. A
summary ends the run. Logs are in ``runinfo/NNN/``: Parsl's ``parsl.log``, and in ``xs/`` the
interchange's log and the pool's ``pool-0.log``.
"""

from __future__ import annotations

import argparse
import math
import time

import parsl

import rankpool.frontends.progress
from rankpool import ExtremeScaleExecutor


@parsl.python_app
def monte_carlo(seed: int, samples: int) -> float:
    """A 1-rank app: the fraction of random points in the unit square under the quarter circle."""
    import numpy as np

    xy = np.random.default_rng(seed).random((samples, 2))
    return 4.0 * np.count_nonzero((xy * xy).sum(axis=1) <= 1.0) / samples


@parsl.python_app
def midpoint(intervals: int, comm=None, parsl_resource_specification={}):  # noqa: B006
    """A multi-rank app: integrate 4 / (1 + x^2) over [0, 1], each rank taking every size-th
    interval, then sum over the task's communicator (never ``MPI.COMM_WORLD``: that is the
    whole pool)."""
    import numpy as np

    rank, size = comm.Get_rank(), comm.Get_size()
    x = (np.arange(rank, intervals, size) + 0.5) / intervals
    mine = float(np.sum(4.0 / (1.0 + x * x))) / intervals
    return comm.allreduce(mine), size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100_000, help="points per Monte Carlo task")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    config = parsl.Config(executors=[ExtremeScaleExecutor(label="xs", ranks_per_node=4)])
    start = time.monotonic()
    with parsl.load(config):
        singles = [monte_carlo(seed, args.samples) for seed in range(16)]
        intervals = [10_000 * (i + 1) for i in range(4)]
        wides = [midpoint(n, parsl_resource_specification={"num_ranks": 4}) for n in intervals]
        done, failed = rankpool.frontends.progress.wait(singles + wides, label="tasks",
                                              show=not args.quiet)
        estimates = [f.result() for f in singles if f.exception() is None]
        integrals = [(n, f.result()) for n, f in zip(intervals, wides) if f.exception() is None]
    elapsed = time.monotonic() - start

    print(f"summary: {done + failed} tasks ({len(singles)} of 1 rank, {len(wides)} of 4 ranks): "
          f"{done} done, {failed} failed in {elapsed:.1f} s")
    if estimates:
        mc = sum(estimates) / len(estimates)
        print(f"  Monte Carlo, {len(estimates)} tasks of 1 rank: pi ~ {mc:.5f} "
              f"(error {abs(mc - math.pi):.1e})")
    for intervals, (value, size) in integrals:
        print(f"  midpoint rule, {intervals} intervals on {size} ranks: pi ~ {value:.12f} "
              f"(error {abs(value - math.pi):.1e})")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
