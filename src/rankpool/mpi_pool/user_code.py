"""What wraps a task's own code on a worker rank, whichever path runs it (:mod:`.worker`, one
task at a time, or :mod:`.plain_runs`, a run of plain tasks back to back): the fork guard, the
walltime alarm, and the failure a raising task reports, its traceback starting at the user's
own frames.
"""

from __future__ import annotations

import os
from types import FrameType, TracebackType

from ..errors import TaskTimeout
from ..task.serialize import dumps_error

#: a fork happened in this process, or in its parent before it was forked (a rank is its
#: keeper's child): only then does a task's end ask ``getpid`` whether this is a fork made
#: inside the task, which must leave at once, never reaching MPI
_forked = False


def _mark_forked() -> None:
    global _forked
    _forked = True


os.register_at_fork(after_in_child=_mark_forked)


def leave_if_forked(pid: int) -> None:
    """End this process at once if it is not ``pid`` (the rank's own): a fork made inside a
    task must never reach MPI."""
    if _forked and os.getpid() != pid:
        os._exit(0)


class Alarm(BaseException):
    """Raised inside user code by the walltime alarm (not an Exception: user code rarely
    catches it)."""


def raise_alarm(signum: int, frame: FrameType | None) -> None:
    raise Alarm()


def failure(exc: BaseException, pid: int, task_id: int, walltime: float | None,
            rank: int, size: int) -> bytes:
    """What a rank reports for a task whose code raised ``exc`` (at ``rank`` of ``size``):
    the pickled error, its traceback without this package's frames on top."""
    leave_if_forked(pid)
    if isinstance(exc, Alarm):
        exc = TaskTimeout(task_id, walltime or 0.0)
    exc.__traceback__ = _user_frames(exc.__traceback__)
    return dumps_error(exc, rank, size)


_HERE = os.path.dirname(__file__)


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """Drop the worker's own frames (this package's) from the top of a task's traceback."""
    while tb is not None and os.path.dirname(tb.tb_frame.f_code.co_filename) == _HERE \
            and tb.tb_next is not None:
        tb = tb.tb_next
    return tb
