"""Serving an ASGI app from inside an actor: uvicorn on the socket the supervisor holds.

The supervisor binds the listening socket once, so a restarted actor serves on the same port at
once. uvicorn runs in the actor's own event loop and must not take the signals over: SIGTERM
belongs to the actor runtime (a graceful stop runs ``on_stop``) and SIGINT to the root.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

START_TIMEOUT = 10.0  # seconds for uvicorn to start listening


class QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers (``capture_signals`` would install both)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HostedApp:
    """An ASGI app served on an already-bound socket, started and stopped by an actor."""

    def __init__(self, app: Any, sock: socket.socket, **options: Any) -> None:
        config = uvicorn.Config(app, lifespan="on", log_config=None, log_level="warning",
                                access_log=False, server_header=False, **options)
        self.server = QuietServer(config)
        self.sock = sock
        self.serving: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Serve, and return once uvicorn listens (or raise why it could not)."""
        self.serving = asyncio.ensure_future(self.server.serve(sockets=[self.sock]))
        async with asyncio.timeout(START_TIMEOUT):
            while not self.server.started:
                if self.serving.done():
                    self.serving.result()
                    raise RuntimeError("uvicorn stopped before it started serving")
                await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.serving is not None:
            await self.serving
