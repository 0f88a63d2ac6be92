"""Fuzz rank 0's death-note port (:mod:`rankpool.mpi_pool.far_notes`), the one socket of a pool
that anyone on the network can reach.

* The note check gets mutated notes built from valid ones (bytes flipped, cut, inserted or
  appended; the body re-signed or not; rank, pid and types changed). It must never raise, and
  take a note exactly when its signature is the pool's and it names a watched rank with that
  rank's pid.
* Raw TCP peers send mutated notes and random bytes to a live box, some closing, some not, and
  some cut off mid-note. Afterwards the box holds no connection past its deadline, and a
  keeper's real note still gets through.

2,000 mutated notes and 200 connections by default; ten times as many with ``RANKPOOL_SLOW=1``.
"""

from __future__ import annotations

import json
import os
import random
import select
import socket
import time

import pytest

from rankpool.mpi_pool import far_notes
from rankpool.mpi_pool.far_notes import NoteBox, send_note, sign

SLOW = os.environ.get("RANKPOOL_SLOW") == "1"
SEED = int(os.environ.get("RANKPOOL_FUZZ_SEED", "6"))
RANKS = {3: 4711, 4: 4712}

pytestmark = pytest.mark.timeout(600 if SLOW else 120)


def _valid(rng: random.Random) -> dict[str, object]:
    rank = rng.choice(sorted(RANKS))
    return {"pid": RANKS[rank], "rank": rank, "status": rng.choice([-9, -11, 3, 0, None]),
            "running": rng.random() < 0.5, "task": rng.choice([None, 7, 2**62]), "host": "n2"}


def _mutate(rng: random.Random, secret: str) -> bytes:
    note = _valid(rng)
    choice = rng.randrange(6)
    if choice == 0:  # a field changed to another value or type, then signed properly
        key = rng.choice(sorted(note))
        note[key] = rng.choice([None, -1, 0, 5, 4711, 4711.0, 4712.0, 3.0, "3", [3], {"a": 1},
                                True, "x" * 50])
        body = json.dumps(note).encode()
        return body + b"\n" + sign(secret, body)
    body = json.dumps(note).encode()
    data = bytearray(body + b"\n" + sign(secret, body))
    if choice == 1:  # bytes flipped
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif choice == 2:  # cut
        del data[rng.randrange(len(data)):]
    elif choice == 3:  # bytes inserted
        at = rng.randrange(len(data) + 1)
        data[at:at] = rng.randbytes(rng.randint(1, 20))
    elif choice == 4:  # appended
        data += rng.choice([b"\n", b"\n\n", rng.randbytes(rng.randint(1, 40))])
    else:  # signed with another key
        data = bytearray(body + b"\n" + sign(rng.randbytes(32).hex(), body))
    return bytes(data)


def _expected(data: bytes, secret: str) -> bool:
    """Whether ``data`` is a note the box must take (an oracle written apart from the box)."""
    body, sep, signature = data.rpartition(b"\n")
    if not sep or signature != sign(secret, body):
        return False
    try:
        note = json.loads(body)
    except ValueError:
        return False
    return isinstance(note, dict) and type(note.get("rank")) is int \
        and type(note.get("pid")) is int and RANKS.get(note["rank"]) == note["pid"]


def test_the_check_takes_exactly_the_signed_notes_of_watched_ranks() -> None:
    rng = random.Random(SEED)
    box = NoteBox(select.epoll(), RANKS, host="127.0.0.1")
    taken = 0
    try:
        for i in range(20000 if SLOW else 2000):
            data = _mutate(rng, box.secret)
            got = box._check(data, "fuzz")  # the unit under test
            assert (got is not None) == _expected(data, box.secret), (i, data)
            taken += got is not None
    finally:
        box.close()
    assert taken  # the mutations kept some valid notes: the check was exercised both ways


def _pump(box: NoteBox, epoll: select.epoll, until: float) -> list[dict[str, object]]:
    notes: list[dict[str, object]] = []
    while time.monotonic() < until:
        for fd, _ in epoll.poll(0.01):
            notes.extend(box.ready(fd))
    return notes


def test_raw_peers_neither_break_the_box_nor_stop_a_real_note() -> None:
    rng = random.Random(SEED + 1)
    epoll = select.epoll()
    box = NoteBox(epoll, RANKS, host="127.0.0.1")
    port = int(box.address.rsplit(":", 2)[1])
    left_open: list[socket.socket] = []
    try:
        for _ in range(2000 if SLOW else 200):
            conn = socket.create_connection(("127.0.0.1", port), timeout=5)
            data = _mutate(rng, box.secret) if rng.random() < 0.7 \
                else rng.randbytes(rng.randint(0, 6000))
            try:
                conn.sendall(data[:far_notes.NOTE_LIMIT * 2])
            except OSError:  # the box closed an oversized note first
                pass
            if rng.random() < 0.1:
                left_open.append(conn)  # never closes: must not hold the box
            else:
                conn.close()
            _pump(box, epoll, time.monotonic() + 0.002)
        _pump(box, epoll, time.monotonic() + 0.5)
        assert len(box.open) <= len(left_open)
        box.expire(time.monotonic() + far_notes.NOTE_DEADLINE + 1)
        assert not box.open
        real = _valid(rng)
        assert send_note(box.address, real)
        deadline = time.monotonic() + 5
        got: list[dict[str, object]] = []
        while not got and time.monotonic() < deadline:
            got = _pump(box, epoll, time.monotonic() + 0.05)
        assert got == [real]
    finally:
        for conn in left_open:
            conn.close()
        box.close()
