"""Doorbells: wake-up hints between the ranks of one host (rankpool.mpi_pool.doorbell)."""

from __future__ import annotations

import os
import socket
import sys
import time

import pytest

from rankpool.mpi_pool.doorbell import Doorbell, new_token

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="doorbells use Linux's abstract socket namespace")


def test_a_ring_ends_a_wait_at_once_and_is_cleared_by_it() -> None:
    token = new_token()
    zero, one = Doorbell(token, 0), Doorbell(token, 1)
    try:
        zero.ring(1)
        t = time.monotonic()
        one.wait(5.0)
        assert time.monotonic() - t < 1.0
        t = time.monotonic()
        one.wait(0.05)  # the ring was cleared: this one times out
        assert time.monotonic() - t >= 0.04
    finally:
        zero.close()
        one.close()


def test_many_rings_wake_once_and_a_missing_bell_is_no_error() -> None:
    token = new_token()
    zero, one = Doorbell(token, 0), Doorbell(token, 1)
    try:
        for _ in range(10_000):  # more than the socket buffer holds: later rings are dropped
            zero.ring(1)
        zero.ring(7)  # nobody has bell 7
        one.wait(1.0)
        t = time.monotonic()
        one.wait(0.05)
        assert time.monotonic() - t >= 0.04
    finally:
        zero.close()
        one.close()


def test_wait_also_ends_when_another_descriptor_is_readable() -> None:
    bell = Doorbell(new_token(), 0)
    r, w = os.pipe()
    try:
        os.write(w, b"x")
        t = time.monotonic()
        bell.wait(5.0, r)
        assert time.monotonic() - t < 1.0
    finally:
        bell.close()
        os.close(r)
        os.close(w)


def test_bells_of_two_pools_do_not_meet_and_a_name_is_taken_once() -> None:
    a, b = Doorbell(new_token(), 1), Doorbell(new_token(), 1)
    try:
        with pytest.raises(OSError):
            Doorbell(a.token, 1)
        assert Doorbell.open(a.token, 1) is None  # the rank then polls instead
        zero = Doorbell(a.token, 0)
        zero.ring(1)
        zero.close()
        t = time.monotonic()
        b.wait(0.05)  # rank 1 of the other pool is not woken
        assert time.monotonic() - t >= 0.04
        t = time.monotonic()
        a.wait(5.0)  # its own pool's rank 1 is
        assert time.monotonic() - t < 1.0
    finally:
        a.close()
        b.close()


@pytest.mark.skipif(os.getuid() != 0, reason="ringing as another user (nobody) needs root")
def test_rings_from_another_user_are_ignored_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    import logging
    token = new_token()
    bell = Doorbell(token, 0)
    try:
        pid = os.fork()
        if pid == 0:  # the child becomes nobody and rings (exit status: how many rings went)
            rang = 0
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                for _ in range(50):  # until the bell's queue is full (a few rings)
                    sock.sendto(b"!", socket.MSG_DONTWAIT, f"\0rankpool-{token}-0")
                    rang += 1
            except OSError:
                pass
            finally:
                os._exit(rang)
        status = os.waitpid(pid, 0)[1]
        rang = os.waitstatus_to_exitcode(status)
        assert rang > 0
        with caplog.at_level(logging.WARNING, logger="rankpool.mpi_pool.doorbell"):
            t = time.monotonic()
            bell.wait(0.3)  # the rings are there, but not ours: the wait runs its course
            assert time.monotonic() - t >= 0.25
        assert bell.ignored == rang
        assert "ignored rings of its doorbell from uid 65534" in caplog.text
        ours = Doorbell(token, 1)
        ours.ring(0)  # a ring of this user's still ends a wait at once
        t = time.monotonic()
        bell.wait(5.0)
        assert time.monotonic() - t < 1.0
        ours.close()
    finally:
        bell.close()


def test_wait_for_ends_only_on_its_note_from_this_user() -> None:
    """The held ranks of an application task wait for their task's note: a ring for anything
    else (work, an earlier task) does not end the wait, nor does the note from another user;
    the note still counts when it came before the wait began."""
    token = new_token()
    zero, one = Doorbell(token, 0), Doorbell(token, 1)
    try:
        zero.ring(1)
        zero.ring(1, b"over 6")
        t = time.monotonic()
        assert not one.wait_for(b"over 7", 0.2)
        assert time.monotonic() - t >= 0.15
        pid = os.fork()
        if pid == 0:  # the note from nobody
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.sendto(b"over 7", socket.MSG_DONTWAIT, f"\0rankpool-{token}-1")
            finally:
                os._exit(0)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        assert not one.wait_for(b"over 7", 0.2)
        assert one.ignored == 1
        zero.ring(1, b"over 7")  # before the wait
        t = time.monotonic()
        assert one.wait_for(b"over 7", 5.0)
        assert time.monotonic() - t < 1.0
    finally:
        zero.close()
        one.close()


def test_a_note_read_by_the_wake_for_the_task_still_ends_the_hold() -> None:
    """A short application task's first rank rings its note before a held rank has woken for
    the task: the held rank's wake (``wait``, then ``clear``) reads the note with the work's
    ring, and its hold must still end at once (it slept the full HOLD_ON_BELL, 0.1 s, per
    missed note: 4-rank no-op application tasks took 100-300 ms)."""
    token = new_token()
    zero, first, one = Doorbell(token, 0), Doorbell(token, 1), Doorbell(token, 2)
    try:
        zero.ring(2)  # the work
        first.ring(2, b"over 9")  # the task is over already
        assert one.wait(5.0)  # the held rank wakes for the work
        one.clear()
        t = time.monotonic()
        assert one.wait_for(b"over 9", 5.0)
        assert time.monotonic() - t < 0.05
        assert not one.wait_for(b"over 9", 0.05)  # a note counts once
        for task in range(1000):  # notes nobody asks for are kept only so far
            first.ring(2, b"over %d" % task)
            one.clear()
        assert len(one._notes) <= 64 and one.wait_for(b"over 999", 0.0)
    finally:
        for bell in (zero, first, one):
            bell.close()
