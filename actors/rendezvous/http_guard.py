"""uvicorn's HTTP and WebSocket protocols with two bounds it lacks: a header timeout and a cap
on connections per client address.

uvicorn (h11) waits for a request's headers for ever: its keep-alive timeout runs only between
requests, so a client that sends half a request line holds a socket and a file descriptor until
it gives up (slowloris). Here every connection must finish its request headers within
``header_timeout`` seconds of connecting (or of its previous response), or it is closed; and an
address that already holds ``per_address`` connections (HTTP or upgraded WebSocket) has further
ones closed at once. The count follows a connection across its upgrade: the HTTP protocol hands
the transport to the WebSocket protocol, whose ``connection_lost`` then gives the slot back.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol

log = logging.getLogger(__name__)

# A browser or worker sends its request headers in one packet; 10 s covers a slow link.
HEADER_TIMEOUT = 10.0
# Connections one address may hold. A NAT may put many workers behind one address, so this is
# generous; it bounds a single host's share of the process's file descriptors.
PER_ADDRESS = 256


class AddressBook:
    """Open connections per client address, shared by the HTTP and WebSocket protocols."""

    def __init__(self, per_address: int) -> None:
        self.per_address = per_address
        self.open: Counter[str] = Counter()

    def take(self, host: str) -> bool:
        if self.open[host] >= self.per_address:
            return False
        self.open[host] += 1
        return True

    def give_back(self, host: str) -> None:
        self.open[host] -= 1
        if self.open[host] <= 0:
            del self.open[host]


def guarded_protocols(header_timeout: float = HEADER_TIMEOUT,
                      per_address: int = PER_ADDRESS) -> dict[str, Any]:
    """uvicorn.Config options (``http``, ``ws``) that enforce both bounds."""
    book = AddressBook(per_address)
    base_ws: Any = AutoWebSocketsProtocol

    class GuardedWebSocket(base_ws):  # type: ignore[misc, valid-type]
        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            if getattr(self, "client", None):
                book.give_back(self.client[0])

    class GuardedHttp(H11Protocol):
        header_timer: asyncio.TimerHandle | None = None
        counted = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            host = self.client[0] if self.client else ""
            if not book.take(host):
                log.warning("connection refused: too many from one address",
                            extra={"address": host, "limit": per_address})
                transport.abort()
                return
            self.counted = True
            self.arm()

        def arm(self) -> None:
            self.disarm()
            self.header_timer = self.loop.call_later(header_timeout, self.headers_too_slow)

        def disarm(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def headers_too_slow(self) -> None:
            log.info("connection closed: request headers not complete within the timeout",
                     extra={"address": self.client[0] if self.client else ""})
            self.transport.abort()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not None and not self.cycle.response_complete:
                self.disarm()  # headers complete: a request is running

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self.arm()  # the next request on a kept-alive connection has its own bound

        def connection_lost(self, exc: Exception | None) -> None:
            self.disarm()
            super().connection_lost(exc)
            if self.counted:
                self.counted = False
                book.give_back(self.client[0] if self.client else "")

        def handle_websocket_upgrade(self, event: Any) -> None:
            self.disarm()
            self.counted = False  # the WebSocket protocol gives the slot back
            super().handle_websocket_upgrade(event)

    return {"http": GuardedHttp, "ws": GuardedWebSocket}


__all__ = ["HEADER_TIMEOUT", "PER_ADDRESS", "AddressBook", "guarded_protocols"]
