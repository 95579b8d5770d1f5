"""The edge's Starlette app: routes, admission of a WebSocket, the caller's observed address.

Routes: WebSocket ``/ws/register/{worker_id}`` (the original protocol, seeds/000 section 1),
``GET /debug/list_workers``, ``GET /health``, ``GET /whoami``. The session table behind them is
``edge.Hub``; the lifespan owns it (closes every connection on the way out).

Close codes a refused or dropped worker sees (RFC 6455 section 7.4: 4000-4999 are ours):

    4400  the worker id is not 1-64 characters of [A-Za-z0-9_-]
    4401  RENDEZVOUS_TOKEN is set and the token is missing or wrong
    4409  a newer connection registered the same worker id
    4408  the worker does not read what it is sent (its outbox overflowed)
    1013  the service holds its maximum of workers: try again later
    1009  a frame over MAX_WS_FRAME_BYTES (closed by uvicorn itself)
    1001  the service is shutting down
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from messages.errors import DecodeError
from protocol.rendezvous import wire


class Hub(Protocol):
    """What the routes need of the session table (``edge.Hub``), which imports this module."""

    @property
    def sessions(self) -> Mapping[str, Any]: ...
    def open(self, worker_id: str, websocket: WebSocket, ip: str, port: int | None) -> Any: ...
    def received(self, session: Any, frame: str | bytes) -> None: ...
    def closed(self, session: Any) -> None: ...
    async def close_all(self, code: int, reason: str) -> None: ...
    async def listing(self) -> Any: ...

CLOSE_BAD_ID, CLOSE_BAD_TOKEN, CLOSE_REPLACED, CLOSE_SLOW = 4400, 4401, 4409, 4408
CLOSE_FULL, CLOSE_GOING_AWAY = 1013, 1001
# uvicorn refuses bigger frames with 1009; frames between wire.MAX_TEXT_FRAME_BYTES and this get an
# error reply instead, so a worker learns the limit without losing its connection.
MAX_WS_FRAME_BYTES = 64 * 1024
TOKEN_HEADER = "x-rendezvous-token"
# Messages waiting for one worker's socket; a worker that lets more pile up is not reading.
OUTBOX_LIMIT = 256


@dataclass(frozen=True)
class EdgeSettings:
    token: str | None = None
    trusted_proxies: tuple[str, ...] = ()  # addresses or networks allowed to set X-Forwarded-For
    max_workers: int = 1000
    # Per connection: a worker sends a handful of messages per minute; 20/s with bursts of 40
    # leaves room for reconnect storms and refuses floods. Over it: an error reply, message dropped.
    rate_per_second: float = 20.0
    rate_burst: int = 40

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(item, strict=False) for item in self.trusted_proxies]


class Session:
    """One worker's live connection: a writer task drains its outbox in order, so a slow worker
    never blocks the edge; beside it, the ledger the registry and pairing actors rebuild from."""

    def __init__(self, worker_id: str, connection_id: int, websocket: WebSocket, ip: str,
                 port: int | None, settings: EdgeSettings) -> None:
        self.worker_id, self.connection_id, self.websocket = worker_id, connection_id, websocket
        self.observed_ip, self.observed_port = ip, port
        self.connected_since = time.time()
        self.record: dict[str, Any] | None = None  # the registry's, as it last told us
        self.peer: str | None = None  # of the last offer relayed, until its peer_disconnected
        self.punch_token: str | None = None
        self.ready_order: int | None = None  # when the registry first reported it ready
        self.rate, self.burst = settings.rate_per_second, float(settings.rate_burst)
        self.tokens, self.refilled = self.burst, time.monotonic()
        self.closing = False
        self.outbox: asyncio.Queue[tuple[int, str]] = asyncio.Queue(OUTBOX_LIMIT)
        self.writer = asyncio.ensure_future(self._write())

    def allow(self, now: float) -> bool:
        """A token bucket: ``rate`` messages per second, ``burst`` at once."""
        self.tokens = min(self.burst, self.tokens + (now - self.refilled) * self.rate)
        self.refilled = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def send(self, payload: dict[str, Any]) -> None:
        self._put(0, wire.encode(payload))

    def close(self, code: int, reason: str) -> None:
        self._put(code, reason)
        self.closing = True

    def stop(self) -> None:
        self.closing = True
        self.writer.cancel()

    def _put(self, code: int, text: str) -> None:
        if self.closing:
            return
        try:
            self.outbox.put_nowait((code, text))
        except asyncio.QueueFull:
            self.stop()
            self.writer = asyncio.ensure_future(self._close(CLOSE_SLOW, "outbox overflow"))

    async def _write(self) -> None:
        while True:
            code, text = await self.outbox.get()
            if code:
                return await self._close(code, text)
            try:
                await self.websocket.send_text(text)
            except (WebSocketDisconnect, RuntimeError, OSError):
                return

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await self.websocket.close(code, reason)

    def as_dict(self) -> dict[str, Any]:
        return {"worker_id": self.worker_id, "connection_id": self.connection_id,
                "observed_ip": self.observed_ip, "observed_port": self.observed_port,
                "connected_since": self.connected_since, "record": self.record,
                "peer": self.peer, "punch_token": self.punch_token,
                "ready_order": self.ready_order}


def observed_address(connection: HTTPConnection, trusted: Sequence[Any]) -> tuple[str, int | None]:
    """The caller's address; ``X-Forwarded-For`` counts only when the direct peer is a trusted
    proxy, and then the right-most hop that is not itself a trusted proxy is the caller."""
    host: str = connection.client.host if connection.client else ""
    port: int | None = connection.client.port if connection.client else 0
    hops = [hop.strip() for hop in connection.headers.get("x-forwarded-for", "").split(",")]
    while _is_trusted(host, trusted) and hops and hops[-1]:
        hop = hops.pop()
        try:
            host, port = str(ipaddress.ip_address(hop)), None
        except ValueError:
            break  # a forged or garbled hop: keep the last address we can vouch for
    return host, port


def _is_trusted(host: str, trusted: Sequence[Any]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in trusted)


def presented_token(connection: HTTPConnection) -> str:
    bearer = connection.headers.get("authorization", "")
    if bearer.lower().startswith("bearer "):
        return bearer[7:].strip()
    return connection.headers.get(TOKEN_HEADER) or connection.query_params.get("token", "")


def refusal(websocket: WebSocket, settings: EdgeSettings, hub: Hub) -> tuple[int, str] | None:
    """Why a new worker connection must be closed at once, as (close code, reason)."""
    worker_id = websocket.path_params["worker_id"]
    try:
        wire.validate_worker_id(worker_id)
    except DecodeError as bad_id:
        return CLOSE_BAD_ID, bad_id.reason[:120]  # a close reason holds at most 123 bytes
    if settings.token and not hmac.compare_digest(presented_token(websocket).encode(),
                                                  settings.token.encode()):
        return CLOSE_BAD_TOKEN, "a valid token is required (Authorization: Bearer, or ?token=)"
    if worker_id not in hub.sessions and len(hub.sessions) >= settings.max_workers:
        return CLOSE_FULL, f"the service holds its maximum of {settings.max_workers} workers"
    return None


def build_app(hub: Hub, settings: EdgeSettings) -> Starlette:
    trusted = settings.networks()

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await hub.close_all(CLOSE_GOING_AWAY, "the rendezvous service is shutting down")

    async def worker_socket(websocket: WebSocket) -> None:
        await websocket.accept()
        refused = refusal(websocket, settings, hub)
        if refused is not None:
            await websocket.close(*refused)
            return
        ip, port = observed_address(websocket, trusted)
        session = hub.open(websocket.path_params["worker_id"], websocket, ip, port)
        try:
            while (frame := await websocket.receive())["type"] != "websocket.disconnect":
                text = frame.get("text")
                hub.received(session, text if text is not None else frame.get("bytes") or b"")
        finally:
            hub.closed(session)

    async def list_workers(_request: Request) -> JSONResponse:
        return JSONResponse(await hub.listing())

    async def health(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "connected_workers": len(hub.sessions)})

    async def whoami(request: Request) -> JSONResponse:
        ip, port = observed_address(request, trusted)
        return JSONResponse({"ip": ip, "port": port})

    routes = [
        WebSocketRoute("/ws/register/{worker_id}", worker_socket),
        Route("/debug/list_workers", list_workers),
        Route("/health", health),
        Route("/whoami", whoami),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
