"""What waking another process costs on this machine: the floor under every hop of a round trip.

Two processes play ping-pong with a 200-byte message, pausing 0.5 ms between trips so that
the cores go idle in between, as they do between the hops of a lone task. Each case is a
transport and a placement:

* ``socketpair``: a Unix socket pair, the cheapest wake-up Linux has (the kernel may run the
  woken process on the waker's core);
* ``zeromq``: a ZeroMQ DEALER pair over TCP on loopback, as rankpool's links are; each hop also
  wakes libzmq's I/O thread on both sides;

with the processes free to run anywhere (``free``), both on core 0 (``one core``), or on
cores 0 and 1 (``two cores``). Medians of ``--trips`` round trips after a warm-up of 10 %:

    python bench/wakeups.py [--trips 2000]

Where waking an idle core is dear (a virtual machine whose idle cores halt), ``two cores``
costs several times ``one core``, and so does every hop whose wake-up lands on another core.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time
from collections.abc import Callable

MESSAGE = b"x" * 200
PAUSE = 0.0005


def _pin(core: int | None) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})


def _trips(send: Callable[[bytes], object], recv: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        time.sleep(PAUSE)
        t0 = time.perf_counter()
        send(MESSAGE)
        recv()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[n // 10:]) * 1e6


def socketpair_case(cores: tuple[int | None, int | None], n: int) -> float:
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        a.close()
        _pin(cores[1])
        while (m := b.recv(4096)) != b"q":
            b.send(m)
        os._exit(0)
    b.close()
    _pin(cores[0])
    try:
        return _trips(a.send, lambda: a.recv(4096), n)
    finally:
        a.send(b"q")
        os.waitpid(pid, 0)
        a.close()
        os.sched_setaffinity(0, range(os.cpu_count() or 1))


def zeromq_case(cores: tuple[int | None, int | None], n: int) -> float:
    import zmq
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    pid = os.fork()
    if pid == 0:
        _pin(cores[1])  # before the context: its I/O thread inherits the placement
        ctx = zmq.Context()
        s = ctx.socket(zmq.DEALER)
        s.connect(f"tcp://127.0.0.1:{port}")
        while (m := s.recv()) != b"q":
            s.send(m)
        s.close(linger=0)
        ctx.term()
        os._exit(0)
    _pin(cores[0])
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.bind(f"tcp://127.0.0.1:{port}")
    try:
        return _trips(s.send, s.recv, n)
    finally:
        s.send(b"q")
        os.waitpid(pid, 0)
        s.close(linger=0)
        ctx.term()
        os.sched_setaffinity(0, range(os.cpu_count() or 1))


PLACEMENTS: dict[str, tuple[int | None, int | None]] = {
    "free": (None, None), "one core": (0, 0), "two cores": (0, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trips", type=int, default=2000, help="round trips per case")
    q = p.parse_args(argv)
    placements = dict(PLACEMENTS)
    if (os.cpu_count() or 1) < 2:
        del placements["two cores"]
    print(f"round trip µs, median of {q.trips - q.trips // 10} (a {PAUSE * 1e3:g} ms pause "
          "before each):\n")
    print("| transport | " + " | ".join(placements) + " |")
    print("|---|" + "---:|" * len(placements))
    for name, case in (("Unix socket pair", socketpair_case), ("ZeroMQ DEALER, TCP", zeromq_case)):
        cells = [f"{case(cores, q.trips):.0f}" for cores in placements.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
