"""A worker rank's fast path: the plain tasks at the head of its queue, run back to back.

A flood's tasks reach a rank in runs (:func:`.subcomms.expand`): 1-rank tasks of one function
and one spec, without buffers. Most of them also have no env, cwd or walltime and are not
application tasks. :func:`run_plain` runs such tasks one after another in one loop. It does
for each what :meth:`.Worker.run_next` does: tells the keeper the task's id, unpickles the
arguments (those of a call without any are the one pickle the front-end sends for them, and
need none), injects ``comm`` (``COMM_SELF``), lets an interrupt into the task, guards against
a fork made inside it, and records its value in the report's columns or its error as
:mod:`.user_code` words it. It skips what such a task does not need: the function's look-up,
the branches for other kinds of task, and the worker loop's turn between tasks.

It hands back to the worker's loop before the next task wherever that loop has something to
do between tasks: a report falls due (``flush_interval`` after the last one, before the last
queued task while results wait, or once the values pass ``MESSAGE_BYTES``), a signal came, or
the next task is not plain.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mpi4py import MPI

from ..protocol.wire import Buffer
from ..task.injection import inject
from ..task.serialize import NO_ARGUMENTS, NONE, dumps_data
from .subcomms import MESSAGE_BYTES
from .user_code import failure, leave_if_forked

if TYPE_CHECKING:
    from .subcomms import WorkItem
    from .worker import Worker

#: seconds a task must have run for its rank, with more queued, to ring rank 0 with each report
#: until it runs dry: its reports then come seldom, and rank 0 sleeps until rung instead of
#: polling for them (a flood of short tasks reports every ``flush_interval``, unrung)
RING_AFTER = 1e-3


def run_plain(worker: Worker) -> int:
    """Run the plain tasks at the head of ``worker``'s queue; return how many ran (0: its
    head is not plain, for :meth:`~.Worker.run_next` to run)."""
    queue = worker.queue
    item, buffers = queue[0]
    interrupts = worker.interrupts
    if buffers or worker.traced or not _plain(item) or (
            interrupts is not None and interrupts.count and interrupts.recent()):
        return 0
    try:
        callee = worker.functions.loads(item.fn_digest, item.fn)
    except BaseException:  # the function cannot be loaded here: run_next fails the task
        return 0
    if callee.marked:
        return 0
    digest, fn, position = item.fn_digest, callee.fn, callee.position
    signals = interrupts.count if interrupts is not None else 0
    link, pid, loads, clock = worker.link, worker.pid, pickle.loads, time.monotonic
    ids, values = worker.value_ids, worker.values
    size, seconds = worker.value_bytes, 0.0
    due = worker.last_report + worker.flush_interval
    bufs: Sequence[Buffer]
    ran = 0
    before = clock()
    while True:
        queue.popleft()
        if link is not None:
            link.task(item.task_id)
        try:
            data = item.data
            args, kwargs = ((), {}) if data == NO_ARGUMENTS else loads(data)
            args, kwargs = inject(position, args, kwargs, MPI.COMM_SELF)
            if interrupts is not None:
                interrupts.in_task = True
            try:
                value = fn(*args, **kwargs)
            finally:
                if interrupts is not None:
                    interrupts.in_task = False
                leave_if_forked(pid)
            if value is None:
                data, bufs = NONE, ()
            else:
                data, bufs = dumps_data(value, "the task's result")
                if bufs:
                    bufs = worker.published(bufs)
            ok = True
        except BaseException as exc:  # the outcome of user code, whatever it is, is a value
            data, bufs, ok = failure(exc, pid, item.task_id, None, 0, 1), (), False
        now = clock()
        if link is not None:
            link.idle()
        if ok and not bufs:  # the common case: a value, in the columns
            ids.append(item.task_id)
            values.append(data)
            size += len(data)
            seconds += now - before
        else:
            end = time.time()
            worker.record(item.task_id, 0, ok, data, bufs, end - (now - before), end)
        if now - before >= RING_AFTER and worker.bell is not None:
            worker.ringing = True
        before = now
        ran += 1
        if not queue or len(queue) == 1 or now > due or size > MESSAGE_BYTES or (
                interrupts is not None and interrupts.count != signals):
            break
        item, buffers = queue[0]
        if buffers or item.fn_digest != digest or not _plain(item):
            break
    worker.value_bytes = size
    worker.value_seconds += seconds
    return ran


def _plain(item: WorkItem) -> bool:
    return len(item.ranks) == 1 and item.setting is None and item.walltime is None \
        and not item.release
