"""A guard process that ends a rank's running application when the rank itself dies.

A worker rank killed while it runs an application task (its pool killed, its block
cancelled) cannot clean up after itself, and the launcher it started would run on as an
orphan. So a rank that runs applications starts one small guard process, in a session of its
own, on the first application task. The rank tells it over a pipe when an application starts
(``watch``), which launcher it started (``pid N``), and when it is over (``idle``); while
watching, the guard records the rank's descendants every :data:`POLL` seconds. When the pipe
closes without ``idle`` (the rank is gone, however it died), the guard ends every recorded
process still alive and their children (:func:`.process_tree.end_processes`), then exits. A
rank that stops cleanly closes the pipe while idle: the guard exits at once.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys

import psutil

from .process_tree import descendants, end_processes

#: seconds between two looks at the rank's descendants while an application runs
POLL = 0.1


class Guard:
    """The rank's side: starts the guard process on first use and tells it what runs."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def _tell(self, line: str) -> None:
        if self._proc is None:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "rankpool.apps.guard", str(os.getpid())],
                stdin=subprocess.PIPE, start_new_session=True)
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(line.encode() + b"\n")
            self._proc.stdin.flush()
        except OSError:  # the guard died: start another next time
            self._proc = None

    def watch(self) -> None:
        self._tell("watch")

    def register(self, pid: int) -> None:
        """Record ``pid`` at once (a launcher this rank just started)."""
        if self._proc is not None:
            self._tell(f"pid {pid}")

    def idle(self) -> None:
        if self._proc is not None:
            self._tell("idle")

    def close(self) -> None:
        """Let the guard go (it exits when the pipe closes) and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


#: the guard of this process's rank, when it runs applications (``run_mpi`` registers with it)
current: Guard | None = None


def guard(rank_pid: int) -> int:
    """The guard process's loop: follow the rank's commands until its pipe closes."""
    known: dict[int, psutil.Process] = {}
    watching = False
    stdin = sys.stdin.buffer
    pending = b""
    while True:
        ready, _, _ = select.select([stdin], [], [], POLL if watching else None)
        if ready:
            chunk = os.read(stdin.fileno(), 4096)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                word, _, arg = line.decode().partition(" ")
                if word == "watch":
                    watching = True
                elif word == "idle":
                    watching = False
                    known.clear()
                elif word == "pid" and arg.isdigit():
                    _record(known, int(arg))
        if watching:
            for proc in descendants(rank_pid, exclude=(os.getpid(),)):
                known.setdefault(proc.pid, proc)
    if watching:
        end_processes([p for p in known.values() if p.is_running()])
    return 0


def _record(known: dict[int, psutil.Process], pid: int) -> None:
    try:
        known.setdefault(pid, psutil.Process(pid))
    except psutil.Error:
        pass


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m rankpool.apps.guard RANK_PID", file=sys.stderr)
        return 2
    return guard(int(args[0]))


if __name__ == "__main__":
    sys.exit(main())
