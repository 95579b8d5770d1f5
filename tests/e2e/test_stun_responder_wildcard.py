"""The embedded STUN responder on a wildcard address answers from the address it was asked on
(``IP_PKTINFO``), not from the address of the outgoing link: a NAT in front of the client only
lets in the endpoint it sent to. On loopback, 127.0.0.1 is the outgoing link's address, so a
request to 127.0.0.2 tells the two apart."""

from __future__ import annotations

import asyncio
import socket
import time

from actors.rendezvous.stun import serve_stun
from protocol.stun.client import BindingSucceeded, StunTransaction
from tests.support.processes import within


async def ask(server_host: str) -> tuple[tuple[str, int], object]:
    responder_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    responder_sock.bind(("0.0.0.0", 0))
    port = responder_sock.getsockname()[1]
    transport, responder = await serve_stun(responder_sock)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        transaction = StunTransaction((server_host, port), time.monotonic())
        for data, addr in transaction.datagrams_to_send(time.monotonic()):
            client.sendto(data, addr)
        data, source = await asyncio.wait_for(loop.sock_recvfrom(client, 2048), within(5))
        transaction.receive_datagram(data, source, time.monotonic())
        assert responder.stats.answered == 1
        return source, transaction.next_event()
    finally:
        client.close()
        transport.close()


def test_the_answer_comes_from_the_address_asked() -> None:
    source, event = asyncio.run(ask("127.0.0.2"))
    assert source[0] == "127.0.0.2"
    assert isinstance(event, BindingSucceeded)
