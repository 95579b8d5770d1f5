"""The ui actor: the worker's web UI (``ui_app``), served by uvicorn in this actor's own event
loop on the TCP socket the supervisor bound once, so a restart keeps the port.

It turns the original's ``/ui_ws`` commands into messages to its siblings, broadcasts what they
send as ``UiEvent`` (and the supervisor's tree events) to every UI client, and keeps what the
path, tunnel and STUN messages say, for ``init_info``, ``ui_client_hello`` and ``StatusRequest``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.actor import Actor
from actors.web import HostedApp
from actors.worker.ui_app import WS_MAX_SIZE, UiApp, UiClient, UiGuard, UiHub, error
from messages.errors import ActorError, DecodeError, UsageError
from messages.runtime import RestartChild, Subscribe, TreeEvent, TreeRequest
from messages.worker import (
    ChatSend,
    EchoPeer,
    PathStatus,
    PingPeer,
    RedoStun,
    StatusRequest,
    StunResult,
    TunnelStatus,
    UiEvent,
)

log = logging.getLogger(__name__)

PAGE = Path(__file__).resolve().parents[2] / "ui" / "index.html"
GRACEFUL_SHUTDOWN = 1  # uvicorn's wait for open sessions; well inside the 5 s shutdown timeout
TREE_TIMEOUT = 5.0
RESTART_TIMEOUT = 60.0  # a restart waits out the child's shutdown and start timeouts
SUBSCRIBE_RETRY = 1.0

# Commands that become one message to one sibling: type -> (sibling, message from the command).
FORWARDED: dict[str, tuple[str, Callable[[dict[str, Any]], Any]]] = {
    "send_p2p_message": ("udp", lambda command: ChatSend(command["content"])),
    "send_quic_message": ("quic", lambda command: ChatSend(command["content"])),
    "p2p_ping_command": ("udp", lambda command: PingPeer()),
    "quic_echo_command": ("quic", lambda command: EchoPeer(command["payload"])),
    "redo_stun_request": ("stun", lambda command: RedoStun()),
}


class UiActor(Actor):
    async def on_start(self) -> None:
        self.worker_id: str = self.ctx.config.get("worker_id", "")
        self.page = PAGE.read_text() if PAGE.exists() else "<h1>ui/index.html is missing</h1>"
        self.hub = UiHub()
        # No token in the config: nobody can use the UI (never an open one by mistake).
        self.guard = UiGuard(self.ctx.config.get("ui_token") or "",
                             tuple(self.ctx.config.get("ui_allowed_origins") or ()))
        self.link = LinkState()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.supervisor = self.ctx.parent
        self.web = HostedApp(UiApp(self).asgi(), self.ctx.sockets["http"],
                             ws_max_size=WS_MAX_SIZE, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN)
        await self.web.start()
        # Not awaited here: the supervisor answers control requests only once it has seen us
        # ready, so asking it from on_start would wait for ourselves.
        self.spawn(self.subscribe())

    async def subscribe(self) -> None:
        while True:
            try:
                await self.supervisor.ask(Subscribe(self.ctx.path), timeout=TREE_TIMEOUT)
                return
            except ActorError as exc:
                log.warning("tree events: subscription failed, retrying", extra={"error": exc})
                await asyncio.sleep(SUBSCRIBE_RETRY)

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = self.ctx.spawn(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def on_receive(self, msg: Any) -> Any:
        if isinstance(msg, UiEvent):
            if not isinstance(msg.payload.get("type"), str):
                raise DecodeError("a UiEvent payload needs a string 'type'")
            return self.hub.broadcast(msg.payload)
        if isinstance(msg, TreeEvent):
            return self.hub.broadcast({"type": "tree_event", "kind": msg.kind, "path": msg.path,
                                       "pid": msg.pid, "reason": msg.reason, "at": msg.at})
        if isinstance(msg, PathStatus | TunnelStatus | StunResult):
            return self.link.update(msg)
        if isinstance(msg, StatusRequest):
            return self.status()
        return super().on_receive(msg)

    async def on_stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await self.web.stop()

    # -- the backend of ui_app -----------------------------------------------------------------
    def init_info(self) -> dict[str, Any]:
        return {"type": "init_info", "worker_id": self.worker_id,
                "p2p_peer_id": self.link.peer_id()}

    async def tree(self) -> list[dict[str, Any]]:
        return await self.supervisor.ask(TreeRequest(), timeout=TREE_TIMEOUT)

    async def command(self, client: UiClient, command: dict[str, Any]) -> None:
        kind = command["type"]
        if kind in FORWARDED:
            sibling, make = FORWARDED[kind]
            self.ctx.ref(sibling).tell(make(command))
        elif kind == "ui_client_hello":
            for payload in self.link.status_events():
                self.hub.send(client, payload)
        elif kind == "restart_worker_request":
            self.spawn(self.restart(client, command.get("path")))
        else:  # start_benchmark_send
            self.hub.send(client, error(f"{kind}: the benchmark is not available yet"))

    async def restart(self, client: UiClient, path: object) -> None:
        """Restart one subtree, or every child of the worker (this actor last: once it asks
        for its own restart, nobody is left to hear the answer)."""
        if path is not None and not isinstance(path, str):
            return self.hub.send(client, error("restart_worker_request: 'path' must be a string"))
        try:
            for target in await self.restart_targets(path or ""):
                self.hub.send(client, restart_status(target, "restarting"))
                if target == self.ctx.path:
                    return self.supervisor.tell(RestartChild(target))
                result = await self.supervisor.ask(RestartChild(target), timeout=RESTART_TIMEOUT)
                self.hub.send(client, restart_status(target, str(result)))
        except (ActorError, UsageError) as exc:
            self.hub.send(client, error(f"restart_worker_request: {exc.reason}"))

    async def restart_targets(self, path: str) -> list[str]:
        parent = self.supervisor.path
        if path and path != parent:
            target = path if "/" in path else f"{parent}/{path}"
            if not target.startswith(parent + "/"):  # e.g. the demo's rendezvous, a sibling
                raise UsageError(f"{path[:80]!r} is not in this worker's tree ({parent})")
            return [target]
        nodes, depth = await self.tree(), parent.count("/") + 1
        children = [n["path"] for n in nodes
                    if n["path"].startswith(parent + "/") and n["path"].count("/") == depth]
        return sorted(children, key=lambda child: child == self.ctx.path)

    def status(self) -> dict[str, Any]:
        return {"worker_id": self.worker_id, "clients": len(self.hub.clients),
                "port": self.ctx.sockets["http"].getsockname()[1], **self.link.summary()}


def restart_status(path: str, status: str) -> dict[str, Any]:
    return {"type": "restart_status", "path": path, "status": status}



@dataclass
class LinkState:
    """What the udp, quic and stun actors last said about the path, the tunnel and the mapping."""

    path: PathStatus | None = None
    tunnel: TunnelStatus | None = None
    stun: StunResult | None = None

    def update(self, msg: PathStatus | TunnelStatus | StunResult) -> None:
        if isinstance(msg, PathStatus):
            self.path = msg
        elif isinstance(msg, TunnelStatus):
            self.tunnel = msg
        else:
            self.stun = msg

    def peer_id(self) -> str | None:
        """The peer from the offer on (the original set it when punching began) until the path
        fails or closes."""
        if self.path is None or self.path.state not in ("punching", "connected"):
            return None
        return self.path.peer_id

    def status_events(self) -> list[dict[str, Any]]:
        """The original's status messages for what is known now (the answer to a hello)."""
        events: list[dict[str, Any]] = []
        if self.path is not None and (peer := self.peer_id()):
            verb = "active" if self.path.state == "connected" else "attempt initiated"
            events.append({"type": "p2p_status_update", "peer_id": peer,
                           "message": f"P2P link {verb} with {peer[:8]}..."})
        if self.tunnel is not None:
            events.append({"type": "quic_status_update", "state": self.tunnel.state,
                           "peer_id": self.tunnel.peer_id, "message": self.tunnel.reason})
        if self.stun is not None and self.stun.ok:
            events.append({"type": "stun_update", "public_ip": self.stun.host,
                           "public_port": self.stun.port, "nat_type": self.stun.nat_type})
        return events

    def summary(self) -> dict[str, Any]:
        stun = self.stun
        return {"p2p_peer_id": self.peer_id(),
                "path_state": self.path.state if self.path else "none",
                "tunnel_state": self.tunnel.state if self.tunnel else "down",
                "public_endpoint": f"{stun.host}:{stun.port}" if stun and stun.ok else None}
