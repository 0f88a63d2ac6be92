"""py-spy sampling of a benchmark's processes and a summary of where their time goes.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
from typing import Any


def pyspy_path() -> str | None:
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return beside if os.path.exists(beside) else shutil.which("py-spy")


def start_pyspy(pid: int, seconds: float, out: str, *, subprocesses: bool = False,
                threads: bool = False, rate: int = 250) -> subprocess.Popen[bytes] | None:
    exe = pyspy_path()
    if exe is None:
        return None
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
           "--rate", str(rate), "--format", "raw", "--output", out, "--nonblocking"]
    if subprocesses:
        cmd.append("--subprocesses")
    if threads:  # stacks then start with the thread, so "roots" splits the samples by thread
        cmd.append("--threads")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def summarize_raw(path: str, top: int = 12) -> dict[str, Any]:
    """Top functions of a py-spy ``raw`` (collapsed stacks) file, by own and inclusive samples.

    A frame is ``function (file:line)``; lines are dropped so a function is counted once.
    Idle samples (a thread waiting in poll or sleep) are counted separately.
    """
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    by_proc: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as fh:
        for line in fh:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            frames = [_frame_name(f) for f in stack.split(";")]
            total += n
            by_proc[frames[0]] += n
            own[frames[-1]] += n
            for f in set(frames):
                incl[f] += n

    def pct(c: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(name, 100.0 * v / total) for name, v in c.most_common(top)]

    return {"samples": total, "own": pct(own), "inclusive": pct(incl), "roots": pct(by_proc)}


def _frame_name(frame: str) -> str:
    if frame.startswith(("thread ", "process ")):
        return frame
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    short = "/".join(file.split("/")[-2:]) if file else ""
    return f"{name} ({short})" if short else name


def collect(spy: subprocess.Popen[bytes], out: str) -> dict[str, Any]:
    """Wait for a py-spy run and summarise what it wrote."""
    try:
        spy.wait(60)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait(10)
    if not os.path.exists(out):
        err = spy.stderr.read().decode()[-500:] if spy.stderr else ""
        return {"error": f"py-spy wrote nothing: {err}"}
    return summarize_raw(out)


def print_profile(title: str, summary: dict[str, Any], file: Any = sys.stderr) -> None:
    if "error" in summary:
        print(f"{title}: {summary['error']}", file=file)
        return
    print(f"{title}: {summary['samples']} samples", file=file)
    for kind in ("own", "inclusive"):
        print(f"  by {kind} samples:", file=file)
        for fn, p in summary[kind]:
            print(f"    {p:5.1f} %  {fn}", file=file)


# =============================================================================================
