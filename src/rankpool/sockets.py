"""ZeroMQ socket helpers shared by every process that holds a socket: the front-end's client,
the interchange and rank 0 of a pool.
"""

from __future__ import annotations

import zmq

#: the option and the flag, as plain ints: pyzmq's enums cost more per call than the call itself
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)


def readable(sock: zmq.Socket[bytes]) -> bool:
    """Whether a message waits on the socket (far cheaper than a ``zmq.Again`` raised). Asking
    also re-arms the socket's ``ZMQ_FD``, which is edge-triggered."""
    # EVENTS is an int option; pyzmq types getsockopt's value int | bytes
    return bool(sock.getsockopt(_EVENTS) & _POLLIN)  # type: ignore[operator]
