"""The rendezvous service's embedded STUN responder: an asyncio shell around ``binding_response``,
and the actor that runs it.

The supervisor binds the UDP socket and hands it over, so the port survives restarts of the
actor. The transport takes ownership of the socket it is given and closes it with itself.
Malformed datagrams are counted by the responder and never reach the actor's mailbox;
``StunStatsRequest`` reads the counters.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import asdict, dataclass
from typing import Any, cast

from actors.actor import Actor
from messages.errors import DecodeError
from messages.rendezvous import StunStatsRequest
from protocol.stun import binding_response

logger = logging.getLogger(__name__)


@dataclass
class StunResponderStats:
    """What the responder did with each datagram; read by the actor for its status."""

    answered: int = 0
    malformed: int = 0
    ignored: int = 0  # well-formed STUN that asks for no answer (indications, responses, TURN)
    failed: int = 0  # our own bug: logged with its traceback, never fatal to the transport


class StunResponder(asyncio.DatagramProtocol):
    """Answers Binding requests on one UDP socket; never raises out of ``datagram_received``."""

    def __init__(self) -> None:
        self.stats = StunResponderStats()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's selector datagram transport is not declared a DatagramTransport subclass.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        # An exception escaping here would make asyncio close the transport: the port would go
        # deaf for every client because of one bad datagram.
        try:
            answer = binding_response(data, (addr[0], addr[1]))
        except DecodeError as error:
            self.stats.malformed += 1
            logger.debug("malformed STUN datagram from %s:%s: %s", addr[0], addr[1], error)
            return
        except Exception:
            self.stats.failed += 1
            logger.exception("STUN responder failed on a datagram from %s:%s", addr[0], addr[1])
            return
        if answer is None:
            self.stats.ignored += 1
        elif self.transport is not None:
            self.stats.answered += 1  # before sending: whoever got the answer sees it counted
            self.transport.sendto(answer, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable from a client that left) are routine on UDP.
        logger.debug("STUN responder socket error: %s", exc)


async def serve_stun(sock: socket.socket) -> tuple[asyncio.DatagramTransport, StunResponder]:
    """Answer STUN on an already-bound UDP socket until the returned transport is closed."""
    loop = asyncio.get_running_loop()
    transport, responder = await loop.create_datagram_endpoint(StunResponder, sock=sock)
    logger.info("STUN responder listening on %s", sock.getsockname())
    return transport, responder


class StunActor(Actor):
    async def on_start(self) -> None:
        self.transport: asyncio.DatagramTransport
        self.responder: StunResponder
        self.transport, self.responder = await serve_stun(self.ctx.sockets["stun"])

    def on_receive(self, msg: Any) -> Any:
        if isinstance(msg, StunStatsRequest):
            return asdict(self.responder.stats)
        return super().on_receive(msg)

    def on_stop(self) -> None:
        self.transport.close()
