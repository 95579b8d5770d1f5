"""The rendezvous service's embedded STUN responder: an asyncio shell around ``binding_response``,
and the actor that runs it.

The supervisor binds the UDP socket and hands it over, so the port survives restarts of the
actor. The transport takes ownership of the socket it is given and closes it with itself.
Malformed datagrams are counted by the responder and never reach the actor's mailbox;
``StunStatsRequest`` reads the counters.

On a wildcard address (``0.0.0.0``, ``::``) the kernel would answer from the address of the link
the answer leaves by, not the one the client asked; a NAT in front of the client drops such an
answer (it only lets in the endpoint it sent to, RFC 4787 section 5). There the responder reads
with ``recvmsg`` and the destination each request came to (``IP_PKTINFO``/``IPV6_PKTINFO``), and
answers with that address as the source.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
from dataclasses import asdict, dataclass
from typing import Any, cast

from actors.actor import Actor
from messages.errors import DecodeError
from messages.rendezvous import StunStatsRequest
from protocol.stun import binding_response

logger = logging.getLogger(__name__)

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux's value; Python names it on few builds
MAX_DATAGRAM = 2048  # a Binding request is tens of bytes; anything larger is not one of ours


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


class PacketInfoTransport(asyncio.DatagramTransport):
    """A datagram transport on a wildcard socket that answers from the address asked."""

    def __init__(self, sock: socket.socket, protocol: asyncio.DatagramProtocol) -> None:
        super().__init__()
        self.sock, self.protocol = sock, protocol
        self.v6 = sock.family == socket.AF_INET6
        self.asked: bytes = b""  # the packed destination of the datagram being answered
        if self.v6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(sock.fileno(), self.read)
        protocol.connection_made(self)

    def read(self) -> None:
        try:
            data, ancillary, _, addr = self.sock.recvmsg(MAX_DATAGRAM, socket.CMSG_SPACE(32))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.protocol.error_received(exc)
            return
        self.asked = next((self.destination(level, kind, value)
                           for level, kind, value in ancillary), b"")
        self.protocol.datagram_received(data, addr)

    def destination(self, level: int, kind: int, value: bytes) -> bytes:
        """The packed address a request came to: in_pktinfo's ipi_addr, in6_pktinfo's addr."""
        if not self.v6 and (level, kind) == (socket.IPPROTO_IP, IP_PKTINFO):
            return value[8:12]
        if self.v6 and (level, kind) == (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO):
            return value[:16]
        return b""

    def sendto(self, data: bytes, addr: Any = None) -> None:  # type: ignore[override]
        if not self.asked:
            ancillary = []
        elif self.v6:
            ancillary = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO,
                          self.asked + struct.pack("@I", 0))]
        else:  # in_pktinfo: ifindex 0, ipi_spec_dst the address asked, ipi_addr ignored
            ancillary = [(socket.IPPROTO_IP, IP_PKTINFO,
                          struct.pack("@i", 0) + self.asked + bytes(4))]
        try:
            self.sock.sendmsg([data], ancillary, 0, addr)
        except OSError as exc:  # a full buffer: the client asks again
            self.protocol.error_received(exc)

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.protocol.connection_lost(None)

    def is_closing(self) -> bool:
        return self.sock.fileno() < 0


def is_wildcard(sock: socket.socket) -> bool:
    return ipaddress.ip_address(sock.getsockname()[0]).is_unspecified


async def serve_stun(sock: socket.socket) -> tuple[asyncio.DatagramTransport, StunResponder]:
    """Answer STUN on an already-bound UDP socket until the returned transport is closed."""
    loop = asyncio.get_running_loop()
    if is_wildcard(sock):
        sock.setblocking(False)
        responder = StunResponder()
        transport: asyncio.DatagramTransport = PacketInfoTransport(sock, responder)
    else:
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
