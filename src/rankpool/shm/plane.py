"""The front-end's side of the shared-memory plane (:mod:`rankpool.shm.arena`).

Whether to use it is the front-end's call, made once (:func:`choose_shared_memory`): it knows
where its blocks run. When on, the front-end

* makes a run prefix and a probe file ``/dev/shm/<prefix>.host``; pools get the prefix
  (``--shared-memory``), and each worker rank that can open the probe shares this host's
  ``/dev/shm`` and sends its large results through segments of its own (the front-end frees
  each after copying it out);
* places large task arguments in segments of its own :class:`~rankpool.shm.arena.Arena`. Every rank
  of a multi-rank task reads them and no reader knows whether it is the last, so readers never
  free them: the front-end does, when the task's result or the loss of its pool arrives (a
  cancelled task may still run, so cancelling frees nothing);
* removes, at shutdown, its segments and whatever segments of the run are left (those of
  ranks killed before they could remove their own).

A front-end killed with SIGKILL cannot remove its probe and argument segments: the interchange,
which is given the prefix and notices the front-end is gone, removes the run's files as it
stops (:meth:`~rankpool.interchange.Interchange.front_end_gone`); worker ranks remove their own.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..protocol.wire import Buffer
from . import arena as shm
from . import reader as shm_reader
from . import run as shm_run

log = logging.getLogger(__name__)


def choose_shared_memory(value: bool | None, local: bool) -> bool:
    """``shared_memory`` as asked (True/False) or, for None, whether blocks run on this host
    (and it has a ``/dev/shm``)."""
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"shared_memory must be True, False or None (automatic: on when blocks "
                        f"run on this host), got {value!r}")
    if value is None:
        return local and shm_run.available()
    if value and not shm_run.available():
        raise ValueError(f"shared_memory=True: {shm_run.SHM_DIR} is missing or not writable on "
                         f"this host")
    return value


def check_cap(cap: int | None) -> int:
    """``shared_memory_cap`` in bytes (None: the default); ValueError names a bad one."""
    if cap is None:
        return shm.DEFAULT_CAP
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
        raise ValueError(f"shared_memory_cap must be a non-negative number of bytes or None, "
                         f"got {cap!r}")
    return cap


@contextmanager
def closed_on_failure(plane: FrontEndPlane | None) -> Iterator[None]:
    """Remove the plane's files if the start-up it guards raises (nothing else would)."""
    try:
        yield
    except BaseException:
        if plane is not None:
            plane.close()
        raise


def shm_options(plane: FrontEndPlane | None) -> dict[str, Any]:
    """The :class:`~rankpool.mpi_pool.config.PoolConfig` fields that hand the plane to pools."""
    if plane is None:
        return {}
    return {"shared_memory": plane.prefix, "shared_memory_cap": plane.arena.cap}


class FrontEndPlane:
    """The arena for task arguments, their slots by task, the probe, and the run's cleanup."""

    def __init__(self, cap: int = shm.DEFAULT_CAP) -> None:
        self.prefix = shm_run.new_run_prefix()
        fd = os.open(shm_run.probe_path(self.prefix), os.O_CREAT | os.O_EXCL | os.O_WRONLY
                     | os.O_NOFOLLOW, 0o600)
        os.close(fd)
        self.arena = shm.Arena(self.prefix, cap=cap)
        self._slots: dict[int, list[shm.Slot]] = {}
        self._lock = threading.Lock()
        self.closed = False

    def publish_args(self, task_id: int, buffers: Sequence[Buffer]) -> Sequence[Buffer]:
        """The frames to send for a task's argument buffers (descriptors for the large ones)."""
        if not buffers or self.closed:
            return buffers
        frames, slots = self.arena.publish(buffers, reader_frees=False)
        if slots:
            with self._lock:
                self._slots[task_id] = slots
        return frames

    def task_ended(self, task_id: int) -> None:
        """Free the task's argument segments: no rank reads them again."""
        if self._slots:
            with self._lock:
                slots = self._slots.pop(task_id, None)
            if slots:
                self.arena.release(slots)

    def tasks_ended(self, task_ids: Iterable[int]) -> None:
        if not self._slots:  # no task holds argument segments (the usual case)
            return
        for task_id in task_ids:
            self.task_ended(task_id)

    def sweep_dead(self) -> None:
        """Remove the free segments of ranks that have exited (a block that died)."""
        removed = shm_run.sweep(self.prefix, only_dead=True)
        if removed:
            log.info("removed %d shared-memory segments of exited ranks", len(removed))

    def close(self) -> None:
        """Remove every segment of the run and the probe; idempotent."""
        if self.closed:
            return
        self.closed = True
        with self._lock:
            self._slots.clear()
        self.arena.close()
        shm_reader.reader().close()
        left = [n for n in shm_run.sweep(self.prefix) if not n.endswith(".host")]
        if left:
            log.info("removed %d shared-memory segments left by pool ranks", len(left))
