"""The lab's delay line without namespaces: datagram socketpairs stand in for the TUN devices
(both keep packet boundaries), and the clock is passed in, so nothing sleeps."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from lab.delayline import DelayLine


@pytest.fixture
def ends() -> Iterator[tuple[socket.socket, socket.socket, socket.socket, socket.socket]]:
    a_outer, a_inner = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b_outer, b_inner = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for s in (a_outer, b_outer, a_inner, b_inner):
        s.setblocking(False)
    yield a_outer, a_inner, b_outer, b_inner
    for s in (a_outer, b_outer, a_inner, b_inner):
        s.close()


def received(sock: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(sock.recv(65535))
        except BlockingIOError:
            return got


def test_packets_cross_after_the_delay_in_order_both_ways(ends) -> None:  # noqa: ANN001
    a_outer, a_inner, b_outer, b_inner = ends
    line = DelayLine(a_inner.fileno(), b_inner.fileno(), delay=0.040, loss=0.0, seed=1)
    a_outer.send(b"one")
    a_outer.send(b"two")
    b_outer.send(b"back")
    line.receive(a_inner.fileno(), 10.0)
    line.receive(b_inner.fileno(), 10.001)
    line.release(10.039)
    assert received(b_outer) == [] and received(a_outer) == []
    assert line.timeout(10.039) == pytest.approx(0.001)
    line.release(10.0405)
    assert received(b_outer) == [b"one", b"two"] and received(a_outer) == []
    line.release(10.042)
    assert received(a_outer) == [b"back"]
    assert line.timeout(10.042) is None


def test_loss_drops_that_fraction_with_a_seed(ends) -> None:  # noqa: ANN001
    a_outer, a_inner, b_outer, _ = ends
    line = DelayLine(a_inner.fileno(), ends[3].fileno(), delay=0.0, loss=0.25, seed=7)
    for i in range(200):
        a_outer.send(b"%d" % i)
        line.receive(a_inner.fileno(), 0.0)
    line.release(0.0)
    arrived = received(b_outer)
    assert line.counts["dropped"] + len(arrived) == 200
    assert 20 < line.counts["dropped"] < 80
    assert arrived == sorted(arrived, key=int)  # what is not lost keeps its order
