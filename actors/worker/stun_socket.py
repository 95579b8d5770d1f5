"""pystun3 over the worker's one UDP socket, which another process owns.

pystun3 2.0.0 (``stun.get_nat_type``) calls only ``sendto(data, addr)`` and ``recvfrom(2048)``
on the socket it is given, treats any exception from ``recvfrom`` as a timeout, and
``socket.gaierror`` from ``sendto`` as "no answer". ``ForwardingSocket`` provides exactly that
over a ``send`` callable and a bounded, thread-safe inbox that the udp actor feeds with
``deliver``. pystun3 blocks, so it runs in a thread of its own (the stun actor's).

pystun3 reads answers naively: a type it does not know raises KeyError, attributes are walked
without RFC 8489 §14 padding (an odd-length SOFTWARE derails it into a ValueError), and every
address is read as IPv4. So ``deliver`` hands it each Binding success re-encoded in the RFC 3489
shape it can read, and nothing else.
"""

from __future__ import annotations

import ipaddress
import logging
import queue
import socket
from collections.abc import Callable
from dataclasses import replace

import stun

from messages.errors import DecodeError, UsageError
from protocol.stun import (
    BINDING,
    Address,
    StunClass,
    StunMessage,
    parse_message,
    serialize_message,
)

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 2.0  # what pystun3's own get_ip_info sets
INBOX_SIZE = 64  # a NAT test has at most one request in flight; more is stray traffic


class ForwardingSocket:
    """The part of a UDP socket pystun3 uses, backed by ``send`` and ``deliver``."""

    def __init__(self, send: Callable[[bytes, Address], object], local_address: Address,
                 *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._send = send
        self._local_address = local_address
        self._inbox: queue.Queue[tuple[bytes, Address]] = queue.Queue(INBOX_SIZE)
        self._timeout = timeout
        self.dropped = 0

    def deliver(self, data: bytes, addr: Address) -> bool:
        """Queue a Binding success for ``recvfrom``; False if the datagram was dropped."""
        answer = readable_by_pystun3(data)
        if answer is None:
            self.dropped += 1
            return False
        try:
            self._inbox.put_nowait((answer, addr))
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def sendto(self, data: bytes, addr: Address) -> int:
        host, port = addr
        if not isinstance(host, str) or not isinstance(port, int):
            # pystun3 sends to a CHANGED-ADDRESS the server did not give as (None, None).
            raise socket.gaierror(f"no address to send to: {addr!r}")
        self._send(bytes(data), (host, port))
        return len(data)

    def recvfrom(self, bufsize: int) -> tuple[bytes, Address]:
        try:
            data, addr = self._inbox.get(timeout=self._timeout)
        except queue.Empty:
            raise TimeoutError(f"no STUN answer within {self._timeout} s") from None
        return data[:bufsize], addr

    def settimeout(self, timeout: float | None) -> None:
        if timeout is None or timeout <= 0:
            raise UsageError(f"ForwardingSocket needs a finite positive timeout, not {timeout}")
        self._timeout = timeout

    def gettimeout(self) -> float:
        return self._timeout

    def getsockname(self) -> Address:
        return self._local_address

    def close(self) -> None:
        """The real socket belongs to the udp actor; there is nothing of ours to close."""


# What pystun3 reads, each from the first of its sources that holds an IPv4 address: RFC 5780
# renamed SOURCE-ADDRESS and CHANGED-ADDRESS, RFC 8489 prefers XOR-MAPPED-ADDRESS.
PYSTUN3_ATTRIBUTES = (
    ("MAPPED-ADDRESS", ("XOR-MAPPED-ADDRESS", "MAPPED-ADDRESS")),
    ("SOURCE-ADDRESS", ("SOURCE-ADDRESS", "RESPONSE-ORIGIN")),
    ("CHANGED-ADDRESS", ("CHANGED-ADDRESS", "OTHER-ADDRESS")),
)


def readable_by_pystun3(data: bytes) -> bytes | None:
    """A Binding success re-encoded with only the attributes pystun3 reads, or None.

    The header's type and 128 bits after the length stay as they were: pystun3 matches its
    transaction id there.
    """
    try:
        message = parse_message(data)
    except DecodeError:
        return None
    if (message.method, message.message_class) != (BINDING, StunClass.SUCCESS):
        return None
    attributes = tuple((name, address) for name, sources in PYSTUN3_ATTRIBUTES
                       if (address := _first_ipv4(message, sources)) is not None)
    return serialize_message(replace(message, attributes=attributes))


def _first_ipv4(message: StunMessage, names: tuple[str, ...]) -> Address | None:
    for name in names:
        address = message.attribute(name)
        if address is not None and ipaddress.ip_address(address[0]).version == 4:
            return address
    return None


def detect_nat_type(sock_like: ForwardingSocket | socket.socket, host: str,
                    port: int) -> tuple[str, str | None, int | None]:
    """RFC 3489 §10.1 NAT-type tests with pystun3: (nat_type, external_ip, external_port).

    Blocks for up to about 3 tests x 4 tries x the socket's timeout. ``host`` must be a server
    with two addresses (stund); against a one-address server the type is meaningless.
    """
    source_ip, source_port = sock_like.getsockname()[:2]
    nat_type, result = stun.get_nat_type(sock_like, source_ip, source_port,
                                         stun_host=host, stun_port=port)
    logger.info("pystun3 via %s:%s: %s, external %s:%s", host, port, nat_type,
                result["ExternalIP"], result["ExternalPort"])
    return nat_type, result["ExternalIP"], result["ExternalPort"]
