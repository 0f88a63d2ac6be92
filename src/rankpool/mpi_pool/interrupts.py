"""What a pool rank does when it is interrupted: stop promptly, and end cleanly.

``mpiexec`` forwards a Ctrl-C to every rank as SIGINT; a batch system's cancel, a provider's
``cancel`` and Hydra's own forwarding of SIGTERM send SIGTERM. A rank must not die of either in
the middle of an MPI call: its peers would spin in ``MPI_Finalize`` and MPICH would leave its
shared-memory file in ``/dev/shm``. :class:`Interrupts` turns the first signal into steps of
the rank's own loop:

* a worker rank raises ``KeyboardInterrupt`` inside the task it is running (the task fails,
  as :class:`~rankpool.errors.TaskExit`, on the submitting side); the tasks that would start
  within ``WINDOW`` seconds (those it holds, and those rank 0 sent before it heard of the
  interrupt) never run: 1-rank ones are reported dropped, as a cancel drops them, and
  multi-rank ones fail as they start, after their ranks built the task's communicator
  together; then it serves on until rank 0 stops it;
* rank 0 of a pool (:mod:`.pool`) leaves its loop: it stops the worker ranks and tells the
  interchange, and every rank returns from ``MPI_Finalize``.

A second signal ends the whole MPI job at once (:func:`.mpich_files.abort`).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType, TracebackType
from typing import Any

from ..exit_codes import ExitCode
from .mpich_files import abort

#: seconds after an interrupt during which a task that starts on the rank fails without running
WINDOW = 2.0


class Interrupts:
    """Handlers for ``signals`` while the rank serves (a context manager; main thread only).

    ``on_first``: called (in the main thread, between two bytecodes) on the first signal;
    it may raise to leave the caller's loop. A second signal aborts the job of ``comm``.
    """

    def __init__(self, signals: Iterable[int], comm: Any, *,
                 on_first: Callable[[int], None] | None = None) -> None:
        self.signals = tuple(signals)
        self.comm = comm
        self.on_first = on_first
        self.count = 0
        self.signum = 0
        self.last = float("-inf")
        self.in_task = False  # a task's own code is running: raise KeyboardInterrupt into it
        self._previous: dict[int, Any] = {}

    @property
    def interrupted(self) -> bool:
        return self.count > 0

    @property
    def name(self) -> str:
        """The signal received, by name (``SIGINT``)."""
        return signal.Signals(self.signum).name if self.signum else ""

    def recent(self) -> bool:
        """Whether a task starting now should fail without running."""
        return time.monotonic() - self.last < WINDOW

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        self.signum = signum
        self.last = time.monotonic()
        if self.count > 1:
            os.write(2, f"rankpool: process {os.getpid()}: second {self.name}: aborting the "
                        f"MPI job\n".encode())
            abort(self.comm, ExitCode.FORCED)
            return
        if self.in_task:
            self.in_task = False
            raise KeyboardInterrupt(f"the task was interrupted ({self.name})")
        if self.on_first is not None:
            self.on_first(signum)
