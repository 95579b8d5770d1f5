"""The edge's Starlette app: routes, admission of a WebSocket, the caller's observed address.

Routes: WebSocket ``/ws/register/{worker_id}`` (the original protocol, seeds/000 section 1),
``GET /debug/list_workers``, ``GET /health``, ``GET /whoami``. The session table behind them is
``edge.Hub``; the lifespan owns it (closes every connection on the way out). Every WebSocket
handshake answers with a fresh ``X-Identity-Challenge`` nonce (``protocol.rendezvous.identity``).

Close codes a refused or dropped worker sees (RFC 6455 section 7.4: 4000-4999 are ours):

    4400  the worker id is not 1-64 characters of [A-Za-z0-9_-] (empty, or holding a slash)
    4401  RENDEZVOUS_TOKEN is set and the token is missing or wrong
    4403  identity refused: another key owns the worker id, the proof is invalid, or proofs
          are required (RENDEZVOUS_ALLOW_UNPROVEN_IDS=0) and none came first (or in time)
    4409  a newer connection registered the same worker id (with a proof of the same key)
    4408  the worker does not read what it is sent (its outbox overflowed)
    1011  the service failed to write to the connection (it is closed and deregistered)
    1013  the service holds its maximum of workers: try again later
    1009  a frame over MAX_WS_FRAME_BYTES (closed by uvicorn itself)
    1001  the service is shutting down
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
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
from protocol.rendezvous import identity, wire
from protocol.rendezvous.registry import listing_entry

log = logging.getLogger(__name__)


class Hub(Protocol):
    """What the routes need of the session table (``edge.Hub``), which imports this module."""

    @property
    def sessions(self) -> Mapping[str, Any]: ...
    @property
    def waiting(self) -> int: ...
    def open(self, worker_id: str, websocket: WebSocket, ip: str, port: int | None,
             nonce: str) -> Any: ...
    def received(self, session: Any, frame: str | bytes) -> None: ...
    def closed(self, session: Any) -> None: ...
    async def close_all(self, code: int, reason: str) -> None: ...
    def listing(self) -> Any: ...

CLOSE_BAD_ID, CLOSE_BAD_TOKEN, CLOSE_REPLACED, CLOSE_SLOW = 4400, 4401, 4409, 4408
CLOSE_IDENTITY = 4403
CLOSE_FULL, CLOSE_GOING_AWAY, CLOSE_INTERNAL = 1013, 1001, 1011
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
    # Workers of the original protocol have no key: admitted (for ids no key owns) unless off.
    allow_unproven: bool = True
    identity_grace: float = identity.DEFAULT_GRACE
    identity_window: float = identity.IDENTITY_WINDOW
    admin_token: str | None = None  # also opens /debug/list_workers

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(item, strict=False) for item in self.trusted_proxies]


class Session:
    """One worker's live connection: a writer task drains its outbox in order, so a slow worker
    never blocks the edge; beside it, the ledger the registry and pairing actors rebuild from."""

    # Thousands live at once: slots keep each one small.
    __slots__ = ("worker_id", "connection_id", "websocket", "nonce", "proven", "admitted",
                 "waiting", "deregistered", "observed_ip", "observed_port",
                 "connected_since", "record", "peer", "punch_token", "ready_order", "rate",
                 "burst", "tokens", "refilled", "closing", "outbox", "writer")

    def __init__(self, worker_id: str, connection_id: int, websocket: WebSocket, ip: str,
                 port: int | None, settings: EdgeSettings, nonce: str = "") -> None:
        self.worker_id, self.connection_id, self.websocket = worker_id, connection_id, websocket
        self.nonce = nonce  # this connection's identity challenge, until its first message
        self.proven: str | None = None  # the fingerprint its identity_proof proved
        self.admitted = False  # holds its worker id (told to the registry)
        self.waiting = False  # must prove before it is admitted
        self.deregistered = False
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
        """Drain the outbox. It cannot end silently: a send that fails for any reason but a
        peer already gone closes the connection (1011), so the reader ends and the worker is
        deregistered, instead of staying registered and deaf."""
        try:
            while True:
                code, text = await self.outbox.get()
                if code:
                    return await self._close(code, text)
                await self.websocket.send_text(text)
        except (WebSocketDisconnect, OSError):
            return
        except Exception:  # noqa: BLE001 - anything else is our bug: log it, drop the worker
            log.exception("writer failed; closing the connection",
                          extra={"worker": self.worker_id})
            self.closing = True
            await self._close(CLOSE_INTERNAL, "the service failed to write to this connection")

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await self.websocket.close(code, reason)

    def as_dict(self) -> dict[str, Any]:
        return {"worker_id": self.worker_id, "connection_id": self.connection_id,
                "observed_ip": self.observed_ip, "observed_port": self.observed_port,
                "connected_since": self.connected_since, "record": self.record,
                "peer": self.peer, "punch_token": self.punch_token,
                "ready_order": self.ready_order, "proven": self.proven}

    def listing(self) -> dict[str, Any] | None:
        """This session's ``/debug/list_workers`` entry, from the registry's last record."""
        if self.record is None:
            return None
        return listing_entry(self.record) | {"paired_peer": self.peer}


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


def token_matches(connection: HTTPConnection, *tokens: str | None) -> bool:
    presented = presented_token(connection).encode()
    return any(hmac.compare_digest(presented, token.encode()) for token in tokens if token)


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
    if settings.token and not token_matches(websocket, settings.token):
        return CLOSE_BAD_TOKEN, "a valid token is required (Authorization: Bearer, or ?token=)"
    if worker_id not in hub.sessions and \
            len(hub.sessions) + hub.waiting >= settings.max_workers:
        return CLOSE_FULL, f"the service holds its maximum of {settings.max_workers} workers"
    return None


def build_app(hub: Hub, settings: EdgeSettings) -> Starlette:
    trusted = settings.networks()

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await hub.close_all(CLOSE_GOING_AWAY, "the rendezvous service is shutting down")

    async def worker_socket(websocket: WebSocket) -> None:
        nonce = identity.new_nonce()
        await websocket.accept(headers=[(identity.CHALLENGE_HEADER.encode(), nonce.encode())])
        refused = refusal(websocket, settings, hub)
        if refused is not None:
            await websocket.close(*refused)
            return
        ip, port = observed_address(websocket, trusted)
        session = hub.open(websocket.path_params["worker_id"], websocket, ip, port, nonce)
        try:
            while (frame := await next_frame(websocket, session))["type"] != \
                    "websocket.disconnect":
                text = frame.get("text")
                hub.received(session, text if text is not None else frame.get("bytes") or b"")
        finally:
            hub.closed(session)

    async def next_frame(websocket: WebSocket, session: Any) -> Any:
        """The next frame; a connection that must prove gets ``identity_window`` seconds."""
        if not session.waiting or session.closing:
            return await websocket.receive()
        try:
            async with asyncio.timeout(settings.identity_window):
                return await websocket.receive()
        except TimeoutError:
            session.close(CLOSE_IDENTITY, "no identity_proof in time")
            return await websocket.receive()

    async def list_workers(request: Request) -> JSONResponse:
        if (settings.token or settings.admin_token) and \
                not token_matches(request, settings.token, settings.admin_token):
            return JSONResponse({"detail": "a valid token is required (Authorization: Bearer, "
                                           "or ?token=)"}, status_code=401)
        return JSONResponse(page_of(hub.listing(), request))

    async def health(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "connected_workers": len(hub.sessions)})

    async def whoami(request: Request) -> JSONResponse:
        ip, port = observed_address(request, trusted)
        return JSONResponse({"ip": ip, "port": port})

    routes = [
        # ``:path`` so that an empty id or one holding a slash reaches the handler and gets
        # the documented 4400, not a bare HTTP 403 from an unmatched route.
        WebSocketRoute("/ws/register/{worker_id:path}", worker_socket),
        Route("/debug/list_workers", list_workers),
        Route("/health", health),
        Route("/whoami", whoami),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def page_of(listing: dict[str, Any], request: Request) -> dict[str, Any]:
    """``?offset=&limit=`` page the ``workers`` of a listing (default: all of them, as the
    original); the counts always describe the whole service."""
    try:
        offset = max(0, int(request.query_params.get("offset", 0)))
        limit = int(request.query_params.get("limit", 0))
    except ValueError:
        return listing
    if not offset and limit <= 0:
        return listing
    items = list(listing["workers"].items())
    end = offset + limit if limit > 0 else len(items)
    return listing | {"workers": dict(items[offset:end]), "offset": offset,
                      "more": end < len(items)}
