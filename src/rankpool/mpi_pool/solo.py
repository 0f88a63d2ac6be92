"""Root alone: a ``CommExecutor`` over a communicator of size 1 (a driver started with
``mpiexec -n 1``, or ``MPI.COMM_SELF``) runs its 1-rank tasks itself, one after another, in its
manager thread beside the user's code, so that a driver works unchanged at every size.

A task runs exactly as on a worker rank (the same :class:`~.worker.Worker` code: its
function and arguments unpickled from what was submitted, ``comm`` injected as
``COMM_SELF``, env and cwd applied), except that its ``walltime`` cannot interrupt it: the
alarm that does so on a worker rank needs the main thread.
"""

from __future__ import annotations

from mpi4py import MPI

from ..protocol.batches import Task
from ..protocol.result_batches import Outcome, Result
from .subcomms import WorkItem
from .task_setting import setting_of
from .worker import Worker


class Solo:
    """Runs one task at a time on this process, with a worker rank's code."""

    def __init__(self) -> None:
        self.worker = Worker(MPI.COMM_SELF)
        self.worker.use_alarm = False  # tasks run in a thread that is not the main one

    def run(self, task: Task) -> Result:
        spec = task.spec
        item = WorkItem(task.task_id, (0,), spec.results_all, spec.walltime, task.fn_digest,
                        bytes(task.fn), bytes(task.data), len(task.buffers), setting_of(spec))
        worker = self.worker
        worker.queue.append((item, list(task.buffers)))
        worker.run_next()
        if worker.value_ids:  # a value without buffers
            worker.value_ids.clear()
            ok, data = True, worker.values.pop()
        else:
            _, _, ok, data, _, _, _ = worker.done.pop()
        buffers, worker.done_buffers = worker.done_buffers, []
        return Result(task.task_id, [Outcome(0, ok, data, buffers)])

    def close(self) -> None:
        self.worker.group.Free()
