"""The garbage collector's settings: rankpool's own processes (the interchange, a pool's rank 0)
freeze what start-up made and collect the young generation less often; the front-end (the
user's process) and the worker ranks (user code) keep theirs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from rankpool.collector import YOUNG


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_service_process_freezes_its_start_up_and_collects_the_young_less_often() -> None:
    out = run_python("""
        import gc
        default = gc.get_threshold()
        from rankpool.collector import settle_for_service
        settle_for_service()
        print(gc.isenabled(), gc.get_freeze_count() > 1000, gc.get_threshold()[0],
              gc.get_threshold()[1:] == default[1:])
    """)
    assert out == f"True True {YOUNG} True"


def test_the_interchange_process_settles_its_collector_before_it_serves() -> None:
    out = run_python("""
        import gc
        import rankpool.interchange.__main__ as entry
        entry.read_config = lambda stream: "a configuration"
        def serve(config, out):
            print(config, gc.get_threshold()[0], gc.get_freeze_count() > 1000)
            return 0
        entry.serve = serve
        raise SystemExit(entry.main([]))
    """)
    assert out == f"a configuration {YOUNG} True"

