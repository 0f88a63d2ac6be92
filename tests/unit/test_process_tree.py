"""``apps.process_tree.descendants``: the processes an application task leaves below its rank,
found without reading every process of the machine when the rank has no child."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rankpool.apps import process_tree
from rankpool.apps.process_tree import descendants

pytestmark = pytest.mark.timeout(60)

#: a child that starts a grandchild, says both pids, and waits
PARENT = ("import subprocess, sys, time\n"
          "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
          "print(g.pid, flush=True); time.sleep(60)\n")


#: a fresh interpreter (no child of its own) in which psutil's walk of the processes fails
NO_WALK = ("import os, psutil\n"
           "from rankpool.apps import process_tree\n"
           "def walk(*args, **kwargs): raise AssertionError('walked the process table')\n"
           "psutil.Process.children = walk\n"
           "print(process_tree.descendants(os.getpid()), process_tree._has_children())\n")


def test_without_a_child_no_process_is_read() -> None:
    out = subprocess.run([sys.executable, "-c", NO_WALK], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "False"]


def test_children_and_grandchildren_are_found() -> None:
    child = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    grandchild = int(child.stdout.readline())
    try:
        assert process_tree._has_children()
        assert {p.pid for p in descendants(os.getpid())} >= {child.pid, grandchild}
    finally:  # only the two this test started (the test process may have others)
        for pid in (child.pid, grandchild):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        child.wait()
