"""The socket helpers every process's data path sends and receives through."""

from __future__ import annotations

import pytest
import zmq

from rankpool.sockets import readable, recv_frames, send_frames, send_routed


@pytest.fixture
def pair():
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://frames")
    b.connect("inproc://frames")
    yield a, b
    ctx.destroy(linger=0)


def test_a_message_arrives_whole_and_in_order(pair):
    a, b = pair
    with pytest.raises(zmq.Again):  # nothing waits: no blocking
        recv_frames(b)
    send_frames(a, [b"header", memoryview(b"blob"), bytearray(b"big")])
    send_frames(a, [b"alone"], block=False)
    assert readable(b)
    assert [f.bytes for f in recv_frames(b)] == [b"header", b"blob", b"big"]
    assert [f.bytes for f in recv_frames(b)] == [b"alone"]
    assert not readable(b)


def test_a_send_that_would_wait_raises_unless_it_may_block():
    ctx = zmq.Context()
    try:
        lonely = ctx.socket(zmq.DEALER)  # no peer: a send has nowhere to go
        with pytest.raises(zmq.Again):
            send_frames(lonely, [b"h", b"body"], block=False)
    finally:
        ctx.destroy(linger=0)


def test_a_routed_message_names_its_peer_and_an_unknown_peer_raises():
    ctx = zmq.Context()
    try:
        router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        router.bind("inproc://routed")
        dealer.setsockopt(zmq.IDENTITY, b"pool-1")
        dealer.connect("inproc://routed")
        send_frames(dealer, [b"hello"])
        assert [f.bytes for f in recv_frames(router)] == [b"pool-1", b"hello"]
        send_routed(router, b"pool-1", [b"h", b"body"])
        assert dealer.recv_multipart() == [b"h", b"body"]
        with pytest.raises(zmq.ZMQError):
            send_routed(router, b"nobody", [b"h"])
    finally:
        ctx.destroy(linger=0)
