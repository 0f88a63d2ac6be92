"""Python's cyclic garbage collector, set for rankpool's own long-running processes.

The interchange and a pool's rank 0 run only rankpool's code. In a flood of small tasks they
hold thousands of short-lived objects at any time (messages, task records, results on their
way), and with Python's default first threshold (700 allocations) the collector walks each of
them before it dies, then again in the older generations it was moved to, and every full
collection walks the tens of thousands of objects left from start-up as well. So, once the
process is set up: :func:`gc.freeze` moves what start-up made out of the collector's sight
(it is kept for the process's life anyway), and a first threshold of ``YOUNG`` lets a flood's
short-lived objects die before the collector looks at them. Cycles are still collected, later.

Worker ranks run user code and keep Python's defaults, and the front-end is the user's
process: rankpool never changes its collector.
"""

from __future__ import annotations

import gc

#: allocations (less deallocations) of tracked objects between two young collections
YOUNG = 50_000


def settle_for_service() -> None:
    """Freeze what start-up made and raise the young generation's threshold (call once the
    process is set up, before its loop)."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG, older, oldest)
