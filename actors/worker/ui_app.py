"""The ui actor's web side: the Starlette app (routes as an explicit list), the hub of connected
UI clients, and the parser of the original's ``/ui_ws`` commands.

Each UI client has a bounded queue and one writer task, so a browser that stops reading never
blocks the actor: when its queue is full it is dropped (its socket closed), and the others carry
on. ``UiActor`` (``actors.worker.ui``) is the backend the app calls into.

The UI drives the worker (chat as it, restart its actors), so other web pages must not reach it
(``UiGuard``): the page, ``/api/tree`` and ``/ui_ws`` need the worker's UI token (``?token=``
in the URL the worker prints, ``Authorization: Bearer``, or the cookie the page sets:
``HttpOnly; SameSite=Strict``, named after the port so two workers on one host do not clash);
``/ui_ws`` also refuses a browser's ``Origin`` other than the UI's own (or an allowed one).
Every response forbids framing (``frame-ancestors 'none'``) and the page runs under a
Content-Security-Policy that allows only its own scripts (no inline script, no eval).
``/health`` and the page's static assets stay open.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from messages.errors import ActorError, DecodeError, UnknownMessage
from protocol.json_text import json_object

log = logging.getLogger(__name__)

MAX_UI_FRAME = 64 * 1024  # a command larger than this is refused; the socket stays open
WS_MAX_SIZE = 4 * MAX_UI_FRAME  # beyond this uvicorn closes the socket (1009): a memory bound
MAX_TEXT = 16 * 1024  # chat or echo text: well inside one mailbox frame (64 KiB)
CLIENT_QUEUE = 256  # messages waiting for one UI client; one more and the client is dropped
GONE = (WebSocketDisconnect, WebSocketDisconnected, OSError)  # the browser went away
UI_DIR = Path(__file__).resolve().parents[2] / "ui"
# The page's own files, served from here (nothing from the internet): route -> (file, type).
ASSETS: dict[str, tuple[str, str]] = {
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
    "/favicon.ico": ("favicon.svg", "image/svg+xml"),
}

# The original's commands and the string fields each one needs (non-empty, at most MAX_TEXT).
COMMAND_FIELDS: dict[str, tuple[str, ...]] = {
    "ui_client_hello": (), "send_p2p_message": ("content",), "send_quic_message": ("content",),
    "p2p_ping_command": (), "quic_echo_command": ("payload",), "redo_stun_request": (),
    "restart_worker_request": (), "start_benchmark_send": (), "cancel_benchmark": (),
}


def error(message: str) -> dict[str, Any]:
    return {"type": "error", "message": message}


def encode(payload: dict[str, Any]) -> str:
    """JSON for the browser; a payload that has no JSON form is its sender's mistake."""
    try:
        return json.dumps(payload, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"a UI payload must be JSON: {exc}") from None


def parse_command(text: str) -> dict[str, Any]:
    """A command from a UI client, checked; raises ``DecodeError`` (or a subclass) on bad input."""
    command = json_object(text, what="a command", limit=MAX_UI_FRAME)
    kind = command.get("type")
    if not isinstance(kind, str) or kind not in COMMAND_FIELDS:
        raise UnknownMessage(f"unknown command type {str(kind)[:40]!r}")
    for name in COMMAND_FIELDS[kind]:
        value = command.get(name)
        if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
            raise DecodeError(f"{kind} needs {name!r}: a non-empty string of at most {MAX_TEXT}")
    return command


class UiClient:
    """One connected browser: its socket, its bounded queue and the task that drains it."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.queue: asyncio.Queue[str] = asyncio.Queue(CLIENT_QUEUE)
        self.writer = asyncio.get_running_loop().create_task(self.write())

    def push(self, text: str) -> bool:
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            return False
        return True

    async def write(self) -> None:
        with contextlib.suppress(*GONE):
            while True:
                await self.websocket.send_text(await self.queue.get())


class UiHub:
    """Every connected UI client; what is sent to one or all of them goes through here."""

    def __init__(self) -> None:
        self.clients: set[UiClient] = set()

    def add(self, websocket: WebSocket) -> UiClient:
        client = UiClient(websocket)
        self.clients.add(client)
        return client

    def discard(self, client: UiClient) -> None:
        self.clients.discard(client)
        client.writer.cancel()

    def send(self, client: UiClient, payload: dict[str, Any]) -> None:
        self.deliver(client, encode(payload))

    def broadcast(self, payload: dict[str, Any]) -> None:
        text = encode(payload)  # once, whatever the number of clients
        for client in list(self.clients):
            self.deliver(client, text)

    def deliver(self, client: UiClient, text: str) -> None:
        if client in self.clients and not client.push(text):
            log.warning("UI client too slow, dropped", extra={"queued": CLIENT_QUEUE})
            self.discard(client)  # its writer ends, so its session ends and uvicorn closes it

    def close(self) -> None:
        for client in list(self.clients):
            self.discard(client)


CLOSE_POLICY = 1008  # RFC 6455 section 7.4.1: policy violation (before accept: HTTP 403)


class UiGuard:
    """Who may use the UI: the token, and on ``/ui_ws`` the browser's Origin."""

    def __init__(self, token: str, allowed_origins: tuple[str, ...] = ()) -> None:
        self.token = token
        self.allowed_origins = set(allowed_origins)

    @staticmethod
    def cookie_name(connection: HTTPConnection) -> str:
        return f"ui_token_{connection.url.port or 80}"

    def presented(self, connection: HTTPConnection) -> str:
        bearer = connection.headers.get("authorization", "")
        if bearer.lower().startswith("bearer "):
            return bearer[7:].strip()
        return (connection.query_params.get("token")
                or connection.cookies.get(self.cookie_name(connection), ""))

    def token_ok(self, connection: HTTPConnection) -> bool:
        return bool(self.token) and hmac.compare_digest(
            self.presented(connection).encode(), self.token.encode())

    def origin_ok(self, connection: HTTPConnection) -> bool:
        """No Origin (not a browser: the token decides), the UI's own, or an allowed one."""
        origin = connection.headers.get("origin")
        if origin is None:
            return True
        own = f"{'https' if connection.url.scheme in ('https', 'wss') else 'http'}://" \
              f"{connection.headers.get('host', '')}"
        return origin == own or origin in self.allowed_origins


# On every response: no framing (old browsers: X-Frame-Options), no sniffing, and no Referer
# that could carry the token in the page's URL elsewhere.
SECURITY_HEADERS = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer",
                    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'"}


# The page's own scripts, styles and icon only (no inline script, no eval), its own socket, and
# no framing.
PAGE_HEADERS = {"Cache-Control": "no-store", "Content-Security-Policy": (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'")}


def unauthorized() -> Response:
    return JSONResponse(error("open the UI with the URL the worker printed (it holds the "
                              "token), or send Authorization: Bearer <UI_TOKEN>"),
                        status_code=401, headers=SECURITY_HEADERS)


class UiBackend(Protocol):
    worker_id: str
    page: str
    hub: UiHub
    guard: UiGuard

    def init_info(self) -> dict[str, Any]: ...

    async def tree(self) -> list[dict[str, Any]]: ...

    async def command(self, client: UiClient, command: dict[str, Any]) -> None: ...


class UiApp:
    """The routes; each one is a few lines over the backend."""

    def __init__(self, backend: UiBackend) -> None:
        self.backend = backend

    def asgi(self) -> Starlette:
        routes: list[BaseRoute] = [
            Route("/", self.index, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/api/tree", self.tree, methods=["GET"]),
            WebSocketRoute("/ui_ws", self.ui_ws),
            *(Route(path, self.asset, methods=["GET"]) for path in ASSETS),
        ]
        return Starlette(routes=routes, lifespan=self.lifespan)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        yield
        self.backend.hub.close()

    async def index(self, request: Request) -> Response:
        guard = self.backend.guard
        if not guard.token_ok(request):
            return unauthorized()
        response = HTMLResponse(self.backend.page, headers=SECURITY_HEADERS | PAGE_HEADERS)
        # The page's own fetches and WebSocket carry the token from here on (same site only).
        response.set_cookie(guard.cookie_name(request), guard.token, httponly=True,
                            samesite="strict", path="/")
        return response

    async def asset(self, request: Request) -> Response:
        name, media_type = ASSETS[request.url.path]
        try:
            body = (UI_DIR / name).read_bytes()
        except OSError:
            return Response(f"ui/{name} is missing", status_code=404, media_type="text/plain")
        return Response(body, media_type=media_type,
                        headers=SECURITY_HEADERS | {"Cache-Control": "no-cache"})

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "worker_id": self.backend.worker_id},
                            headers=SECURITY_HEADERS)

    async def tree(self, request: Request) -> Response:
        if not self.backend.guard.token_ok(request):
            return unauthorized()
        try:
            return JSONResponse(await self.backend.tree(), headers=SECURITY_HEADERS)
        except ActorError as exc:  # the supervisor is busy (restarting) or gone
            return JSONResponse(error(exc.reason), status_code=503, headers=SECURITY_HEADERS)

    async def ui_ws(self, websocket: WebSocket) -> None:
        """One session: init_info first, then commands until either side goes away."""
        guard = self.backend.guard
        if not guard.origin_ok(websocket) or not guard.token_ok(websocket):
            log.warning("UI WebSocket refused", extra={
                "origin": str(websocket.headers.get("origin"))[:100],
                "token": "valid" if guard.token_ok(websocket) else "missing or wrong"})
            await websocket.close(CLOSE_POLICY)  # before accept: the handshake gets HTTP 403
            return
        await websocket.accept()
        hub = self.backend.hub
        client = hub.add(websocket)
        hub.send(client, self.backend.init_info())
        reader = asyncio.get_running_loop().create_task(self.read(client))
        try:
            await asyncio.wait({reader, client.writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            reader.cancel()
            hub.discard(client)
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            log.error("UI session failed", exc_info=reader.exception())

    async def read(self, client: UiClient) -> None:
        with contextlib.suppress(*GONE):
            await self.read_commands(client)

    async def read_commands(self, client: UiClient) -> None:
        while True:
            message = await client.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is None:
                self.backend.hub.send(client, error("commands are JSON text frames"))
                continue
            try:
                command = parse_command(message["text"])
            except DecodeError as exc:
                self.backend.hub.send(client, error(exc.reason))
                continue
            await self.backend.command(client, command)
