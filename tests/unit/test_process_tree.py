"""``apps.process_tree.descendants``: the processes an application task leaves below its rank,
found without reading every process of the machine when the rank has no child."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest

from rankpool.apps import process_tree
from rankpool.apps.process_tree import descendants

pytestmark = pytest.mark.timeout(60)

#: a child that starts a grandchild, says both pids, and waits
PARENT = ("import subprocess, sys, time\n"
          "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
          "print(g.pid, flush=True); time.sleep(60)\n")


def test_without_a_child_no_process_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    def walk(*args: object, **kwargs: object) -> None:
        raise AssertionError("walked the process table")
    monkeypatch.setattr(psutil.Process, "children", walk)
    assert descendants(os.getpid()) == []
    assert not process_tree._has_children()


def test_children_and_grandchildren_are_found() -> None:
    child = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        grandchild = int(child.stdout.readline())
        assert process_tree._has_children()
        assert {p.pid for p in descendants(os.getpid())} >= {child.pid, grandchild}
    finally:
        for p in descendants(os.getpid()):
            p.kill()
        child.wait()
