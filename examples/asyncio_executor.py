"""``rankpool.Executor`` from ``asyncio``: await MPI tasks next to other coroutines.

    python examples/asyncio_executor.py

``Executor`` is a ``concurrent.futures.Executor``, so asyncio takes it as it is:

* ``loop.run_in_executor(ex, fn, *args)`` for 1-rank calls;
* ``asyncio.wrap_future(ex.requirements(...).submit(fn, ...))`` for anything with
  requirements (here 2-rank tasks).

The event loop never blocks. While the tasks run on the pool, a heartbeat coroutine keeps
ticking, and results are handled in the order they finish (``asyncio.as_completed``).
"""

from __future__ import annotations

import asyncio
import time

from rankpool import Executor


def simulate(case: int, steps: int, comm=None) -> tuple[int, float, int]:
    """A 2-rank "simulation": each rank sums its half of a series; rank 0 returns the total."""
    rank, size = comm.Get_rank(), comm.Get_size()
    time.sleep(0.05 * (4 - case))            # cases take different times
    part = sum(1.0 / (k * k) for k in range(1 + rank, steps + 1, size))
    return case, comm.allreduce(part), size


def prepare(case: int) -> int:
    """A 1-rank step: choose the number of terms for a case."""
    return 1000 * (case + 1)


async def heartbeat(stop: asyncio.Event) -> int:
    """Counts ticks while the tasks run, showing that the event loop stays free."""
    ticks = 0
    while not stop.is_set():
        ticks += 1
        await asyncio.sleep(0.01)
    return ticks


async def run(ex: Executor) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    beats = asyncio.create_task(heartbeat(stop))

    steps = await asyncio.gather(*(loop.run_in_executor(ex, prepare, case) for case in range(4)))
    pair = ex.requirements(num_ranks=2)
    futures = [asyncio.wrap_future(pair.submit(simulate, case, n)) for case, n in enumerate(steps)]
    for next_done in asyncio.as_completed(futures):
        case, total, size = await next_done
        print(f"case {case}: sum of 1/k^2 over {steps[case]} terms on {size} ranks = {total:.6f}")

    stop.set()
    print(f"the event loop ticked {await beats} times while the pool worked")


def main() -> None:
    with Executor(max_ranks=4) as ex:
        asyncio.run(run(ex))


if __name__ == "__main__":
    main()
