"""How many 1-rank tasks rank 0 queues on a worker rank: its prefetch depth, from how long the
pool's tasks run.

A rank that holds several shared 1-rank tasks runs them one after another without waiting
for rank 0 in between. Each message between rank 0 and a rank costs both more than a task
that returns at once, so a flood of such tasks runs best with many per message; but every
task queued on a rank waits for those ahead of it, a long one included. So the depth follows
the tasks' run time, measured by the ranks (their reports carry it): rank 0 queues at most
``FLOOR`` tasks on a rank (the configured depth, if that is smaller), and more, doubling up
to the configured depth, while the tasks that ended in the last ``CHECK_EVERY`` seconds ran
so briefly on average that all the tasks queued on a rank run in ``WINDOW`` seconds or less:
tasks of 40 µs or more keep the floor; tasks under 20 µs, a flood of tasks that return at
once, get 256 (the default depth, ``placement.scheduler.DEFAULT_DEPTH``). It comes down
again once the queued tasks would run more than twice ``WINDOW``, so run times near a step
do not move it back and forth: each move recounts every rank's state (O(ranks)).
"""

from __future__ import annotations

#: most 1-rank tasks queued on a rank whatever its tasks' run time (or the depth, if smaller)
FLOOR = 64
#: seconds of run time (the average of the recent tasks) queued on a rank beyond the floor
WINDOW = 0.005
#: seconds between two looks at the run times reported
CHECK_EVERY = 0.1


class Prefetch:
    """The depth for tasks of the recent run times, up to ``most`` (the configured depth)."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.floor = min(FLOOR, most)
        self.depth = self.floor
        self._tasks = 0
        self._seconds = 0.0
        self._next_check = 0.0

    def ran(self, tasks: int, seconds: float) -> None:
        """Ranks reported ``tasks`` 1-rank tasks ended, which ran ``seconds`` in all."""
        self._tasks += tasks
        self._seconds += seconds

    def update(self, now: float) -> int | None:
        """The new depth, when it is time to look again and the run times call for another
        one; None otherwise (no task ended since the last look leaves it as it is)."""
        if now < self._next_check:
            return None
        self._next_check = now + CHECK_EVERY
        tasks, seconds = self._tasks, self._seconds
        self._tasks, self._seconds = 0, 0.0
        if not tasks:
            return None
        mean = seconds / tasks
        deeper = self._allowed(mean)
        shallower = self._allowed(mean / 2)  # what tasks half as long would allow
        if deeper > self.depth:
            self.depth = deeper
        elif shallower < self.depth:
            self.depth = shallower
        else:
            return None
        return self.depth

    def _allowed(self, mean: float) -> int:
        """The deepest queue (the floor, doubled) whose tasks, ``mean`` seconds each, run in
        ``WINDOW``, up to ``most``."""
        depth = self.floor
        while depth < self.most and 2 * depth * mean <= WINDOW:
            depth *= 2
        return min(depth, self.most)
