"""Death notes from ranks on other nodes than rank 0's, without MPI: a process forks its rank
as ``python -m rankpool.mpi_pool`` does, is told rank 0's note box as a rank on another node
is, and dies; its keeper delivers the note over TCP. And the box's defences: it takes only a
whole note, with the pool's secret, for a rank and pid it watches, under the size limit, and
no connection holds it."""

from __future__ import annotations

import json
import logging
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rankpool.mpi_pool import far_notes
from rankpool.mpi_pool.deaths import Death, DeathWatch, Identity
from rankpool.mpi_pool.far_notes import NoteBox, send_note

pytestmark = pytest.mark.timeout(60)

# the child says its pid, reads the box's address, serves as rank 3 on "node9", then dies as told
RANK = """
import os, signal, sys
from rankpool.mpi_pool.keeper import keep
link = keep()
print(os.getpid(), flush=True)
link.serving(3, sys.argv[1], sys.stdin.readline().strip(), "node9")
link.task(42)
how = sys.stdin.readline().strip()
if how.startswith("exit"):
    os._exit(int(how[4:]))
os.kill(os.getpid(), getattr(signal, how))
"""


def _deaths(watch: DeathWatch, timeout: float = 15.0) -> list[Death]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = watch.deaths()
        if found:
            return found
        time.sleep(0.01)
    return []


@pytest.mark.parametrize(("how", "status"), [("SIGSEGV", -11), ("exit3", 3)])
def test_a_rank_on_another_node_reports_its_death_to_rank_0(tmp_path: Path, how: str,
                                                            status: int) -> None:
    notes = tmp_path / "notes"
    proc = subprocess.Popen([sys.executable, "-c", RANK, str(notes)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    child = int(proc.stdout.readline())
    watch = DeathWatch({}, str(tmp_path / "rank0"), "here", far={3: Identity(child, proc.pid)})
    assert watch.watching == 1 and watch.fileno() is not None and watch.box_address
    proc.stdin.write(f"{watch.box_address}\n{how}\n")
    proc.stdin.flush()
    assert proc.wait(30) == 0  # the launcher sees a clean exit and keeps the job
    # the note arrived: the watch's descriptor woke, and it names the rank's own node
    assert select.select([watch.fileno()], [], [], 0)[0] or watch.deaths()
    deaths = _deaths(watch)
    assert deaths == [Death(3, "node9", child, status, 42, True)]
    assert not notes.exists() or not list(notes.iterdir())  # sent, not left in a file
    watch.close()


def _box() -> tuple[NoteBox, select.epoll]:
    epoll = select.epoll()
    return NoteBox(epoll, {5: 4711}, host="127.0.0.1"), epoll


def _pump(box: NoteBox, epoll: select.epoll, seconds: float = 2.0) -> list[dict[str, object]]:
    """Handle the box's events for ``seconds`` (or until a note arrived)."""
    notes: list[dict[str, object]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not notes:
        for fd, _ in epoll.poll(0.05):
            notes.extend(box.ready(fd))
    return notes


def _port(box: NoteBox) -> int:
    return int(box.address.rsplit(":", 2)[1])


def _send_raw(box: NoteBox, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", _port(box)), timeout=5) as conn:
        conn.sendall(data)


def test_the_box_takes_a_note_with_the_secret_for_a_rank_it_watches() -> None:
    box, epoll = _box()
    try:
        note = {"rank": 5, "pid": 4711, "status": -9, "task": 8, "running": True, "host": "n2"}
        import threading
        sent: list[bool] = []
        sender = threading.Thread(target=lambda: sent.append(send_note(box.address, note)))
        sender.start()
        assert _pump(box, epoll) == [note]
        sender.join(10)
        assert sent == [True] and not box.open
    finally:
        box.close()


@pytest.mark.parametrize(("body", "key", "why"), [
    (b'{"rank": 5, "pid": 4711}', "0" * 64, "not signed with the pool's secret"),
    (b'{"rank": 5, "pid": 4711}', "", "not signed with the pool's secret"),
    (b"", None, "not signed with the pool's secret"),
    (b'{"rank": 5, "pid": 1}', "SECRET", "not a rank this pool watches"),
    (b'{"rank": 6, "pid": 4711}', "SECRET", "not a rank this pool watches"),
    (b"not json", "SECRET", "malformed"),
    (b"[1, 2]", "SECRET", "malformed"),
    (b" " * far_notes.NOTE_LIMIT, "SECRET", "over 4096 bytes"),
], ids=["wrong-key", "unsigned", "empty", "wrong-pid", "wrong-rank", "not-json", "not-a-dict",
        "big"])
def test_the_box_drops_and_logs_what_is_not_a_note_of_the_pool(
        caplog: pytest.LogCaptureFixture, body: bytes, key: str | None, why: str) -> None:
    box, epoll = _box()
    try:
        if key is None:
            data = body
        else:
            signature = far_notes.sign(box.secret, body) if key == "SECRET" else \
                (far_notes.sign(key, body) if key else b"")
            data = body + b"\n" + signature
        with caplog.at_level(logging.WARNING, logger=far_notes.__name__):
            _send_raw(box, data)
            assert _pump(box, epoll, seconds=1.0) == []
        assert why in caplog.text
        assert not box.open  # the connection was closed
    finally:
        box.close()


def test_a_silent_connection_is_closed_after_the_deadline_and_holds_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    box, epoll = _box()
    try:
        silent = socket.create_connection(("127.0.0.1", _port(box)), timeout=5)
        _pump(box, epoll, seconds=0.3)
        assert len(box.open) == 1
        box.expire(time.monotonic() + far_notes.NOTE_DEADLINE / 2)
        assert len(box.open) == 1
        with caplog.at_level(logging.WARNING, logger=far_notes.__name__):
            box.expire(time.monotonic() + far_notes.NOTE_DEADLINE + 1)
        assert not box.open and "sent no whole note" in caplog.text
        assert silent.recv(1) == b""  # closed by the box
        silent.close()
    finally:
        box.close()


def test_connections_past_the_limit_are_closed_on_arrival(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(far_notes, "MAX_OPEN", 2)
    box, epoll = _box()
    conns = []
    try:
        with caplog.at_level(logging.WARNING, logger=far_notes.__name__):
            for _ in range(4):
                conns.append(socket.create_connection(("127.0.0.1", _port(box)), timeout=5))
                _pump(box, epoll, seconds=0.2)
        assert len(box.open) == 2 and "2 are open already" in caplog.text
    finally:
        for conn in conns:
            conn.close()
        box.close()


def test_a_keeper_that_cannot_reach_rank_0_says_so_and_keeps_the_note(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    notes = tmp_path / "notes"
    proc = subprocess.Popen([sys.executable, "-c", RANK, str(notes)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    child = int(proc.stdout.readline())
    proc.stdin.write(f"127.0.0.1:{port}:{'0' * 64}\nSIGKILL\n")
    proc.stdin.flush()
    assert proc.wait(30) == 0
    assert "cannot send the death note of rank 3 to rank 0 at 127.0.0.1" in proc.stderr.read()
    note = json.loads((notes / f"{child}.json").read_text())
    assert (note["rank"], note["status"], note["task"], note["host"]) == (3, -9, 42, "node9")


def test_no_box_without_ranks_on_other_nodes(tmp_path: Path) -> None:
    watch = DeathWatch({}, str(tmp_path), "here")
    assert watch.box_address == "" and watch.fileno() is None and watch.watching == 0
    watch.close()


def test_a_note_travels_signed_and_the_secret_never_crosses_the_network() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        secret = "ab" * 32
        assert send_note(f"127.0.0.1:{port}:{secret}", {"rank": 2, "pid": 7})
        conn, _ = server.accept()
        with conn:
            data = b""
            while chunk := conn.recv(4096):
                data += chunk
    body, _, signature = data.rpartition(b"\n")
    assert json.loads(body) == {"rank": 2, "pid": 7}
    assert signature == far_notes.sign(secret, body) and secret.encode() not in data
