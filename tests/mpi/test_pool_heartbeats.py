"""A real pool's heartbeats against a bare interchange socket (a ROUTER in the test).

The pool answers the interchange's heartbeat once it has been silent for a period, and beats
unprompted only a third of the threshold after its last message: an interchange with many
pools beats each less often, and its pools follow its pace.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from rankpool.launchers.mpiexec import find_mpiexec
from rankpool.protocol.messages import Heartbeat, Registered, Stop
from rankpool.protocol.wire import decode_header

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(120)]

PERIOD, THRESHOLD = 0.2, 3.0  # unprompted beats every 1 s


def test_pool_answers_beats_and_otherwise_beats_every_third_of_the_threshold(
        tmp_path: Path) -> None:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    cmd = [find_mpiexec(), "-n", "2", sys.executable, "-m", "rankpool.mpi_pool", "--interchange",
           f"tcp://127.0.0.1:{port}", "--block-id", "1", "--heartbeat-period", str(PERIOD),
           "--heartbeat-threshold", str(THRESHOLD), "--run-dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def receive(timeout: float) -> tuple[bytes, str] | None:
        if not router.poll(timeout * 1000):
            return None
        frames = router.recv_multipart()
        return frames[0], decode_header(frames[1])["k"]

    try:
        first = receive(60.0)
        assert first is not None and first[1] == "register", (first, proc.poll())
        pool = first[0]
        router.send_multipart([pool, *Registered("", PERIOD, THRESHOLD).encode()])
        # the interchange silent for 2.4 s (under the threshold): beats at most every 1 s
        beats, end = [], time.monotonic() + 2.4
        while (left := end - time.monotonic()) > 0:
            got = receive(left)
            if got is not None:
                assert got[1] == "heartbeat", got
                beats.append(time.monotonic())
        gaps = [b - a for a, b in zip(beats, beats[1:])]
        assert 2 <= len(beats) <= 4 and min(gaps) > 0.8, gaps  # every period: 12 beats
        # the interchange beats every 0.5 s: each beat is answered at once, nothing else sent
        for _ in range(4):
            time.sleep(0.5)
            sent = time.monotonic()
            router.send_multipart([pool, *Heartbeat().encode()])
            got = receive(1.0)
            assert got is not None and got[1] == "heartbeat"
            assert time.monotonic() - sent < 0.3
            assert receive(0.0) is None
        router.send_multipart([pool, *Stop("test done").encode()])
        assert proc.wait(30) == 0, proc.communicate()
        leaving = receive(1.0)
        assert leaving is not None and leaving[1] == "stop"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        ctx.destroy(linger=0)
