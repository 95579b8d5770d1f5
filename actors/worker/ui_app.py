"""The ui actor's web side: the Starlette app (routes as an explicit list), the hub of connected
UI clients, and the parser of the original's ``/ui_ws`` commands.

Each UI client has a bounded queue and one writer task, so a browser that stops reading never
blocks the actor: when its queue is full it is dropped (its socket closed), and the others carry
on. ``UiActor`` (``actors.worker.ui``) is the backend the app calls into.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
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
    try:  # "\ud800" escapes decode to lone surrogates, which no message can carry on
        json.dumps(command, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise DecodeError("a command must be valid Unicode") from None
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


class UiBackend(Protocol):
    worker_id: str
    page: str
    hub: UiHub

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
        return HTMLResponse(self.backend.page, headers={"Cache-Control": "no-store"})

    async def asset(self, request: Request) -> Response:
        name, media_type = ASSETS[request.url.path]
        try:
            body = (UI_DIR / name).read_bytes()
        except OSError:
            return Response(f"ui/{name} is missing", status_code=404, media_type="text/plain")
        return Response(body, media_type=media_type, headers={"Cache-Control": "no-cache"})

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "worker_id": self.backend.worker_id})

    async def tree(self, request: Request) -> Response:
        try:
            return JSONResponse(await self.backend.tree())
        except ActorError as exc:  # the supervisor is busy (restarting) or gone
            return JSONResponse(error(exc.reason), status_code=503)

    async def ui_ws(self, websocket: WebSocket) -> None:
        """One session: init_info first, then commands until either side goes away."""
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
