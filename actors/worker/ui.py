"""The ui actor: the worker's web UI (``ui_app``), served by uvicorn in this actor's own event
loop on the TCP socket the supervisor bound once, so a restart keeps the port.

It turns the original's ``/ui_ws`` commands into messages to its siblings, broadcasts what they
send as ``UiEvent`` (and the supervisor's tree events) to every UI client, and keeps what the
path, tunnel and STUN messages say, for ``init_info``, ``ui_client_hello`` and ``StatusRequest``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.actor import Actor, Ref
from actors.web import HostedApp
from actors.worker.benchmark import cancel_command, start_command
from actors.worker.driver import load_state, save_state, state_file
from actors.worker.ui_app import WS_MAX_SIZE, UiApp, UiClient, UiGuard, UiHub, error
from messages.errors import ActorError, DecodeError
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
TREE_HISTORY = 200  # tree events kept (and saved) for a page that connects later
CHAT_HISTORY = 100  # chat lines kept (and saved): each up to MAX_TEXT characters
MAX_REF = 64  # a chat ref from the page: an opaque name for its chat_state events
GRANDPARENT_TIMEOUT = 2.0  # the worker's own restarts and last exit live one level up
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
    "start_benchmark_send": ("benchmark", start_command),
    "cancel_benchmark": ("benchmark", cancel_command),
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
        self.history = History(state_file(self.ctx.rundir, self.ctx.path, "ui"))
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
            self.hub.broadcast(msg.payload)
            return self.remember(msg.payload)
        if isinstance(msg, TreeEvent):
            event = {"type": "tree_event", "kind": msg.kind, "path": msg.path,
                     "pid": msg.pid, "reason": msg.reason, "at": msg.at}
            self.history.tree_event(event)
            return self.hub.broadcast(event)
        if isinstance(msg, PathStatus | TunnelStatus | StunResult):
            self.link.update(msg)
            if isinstance(msg, PathStatus):
                self.hub.broadcast(path_status(msg))
            return None
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

    def hello(self, client: UiClient) -> None:
        """The answer to ``ui_client_hello``: the original's status messages for what is known
        now, then the path, the rendezvous connection and the history to replay."""
        for payload in self.link.status_events():
            self.hub.send(client, payload)
        if self.link.path is not None:
            self.hub.send(client, path_status(self.link.path))
        if self.link.rendezvous is not None:
            self.hub.send(client, self.link.rendezvous)
        self.hub.send(client, self.history.replay())

    def remember(self, payload: dict[str, Any]) -> None:
        """Keep what a page reloaded later must see: chats, their marks, the last result."""
        kind = payload["type"]
        if kind == "chat_state":
            if (entry := self.history.chat_state(payload)) is not None:
                self.hub.broadcast({"type": "chat", **entry})
        elif kind in ("p2p_message_received", "quic_message_received"):
            entry = self.history.chat("in", "udp" if kind.startswith("p2p") else "quic",
                                      str(payload.get("content", "")), "delivered",
                                      peer=str(payload.get("from_peer_id", "")))
            self.hub.broadcast({"type": "chat", **entry})
        elif kind == "rendezvous_status":
            self.link.rendezvous = payload
        elif kind == "benchmark_result":
            self.history.benchmark = payload
            self.history.save()

    async def tree(self) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = await self.supervisor.ask(TreeRequest(),
                                                                 timeout=TREE_TIMEOUT)
        return await self.own_record(nodes)

    async def own_record(self, nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The worker's own restarts and last exit, from the supervisor above it (if any)."""
        worker = self.supervisor.path
        if "/" not in worker:
            return nodes
        try:
            grandparent = Ref(worker.rsplit("/", 1)[0], self.ctx.transport)
            above = await grandparent.ask(TreeRequest(), timeout=GRANDPARENT_TIMEOUT)
        except ActorError:
            return nodes
        mine = next((n for n in above if n.get("path") == worker), None)
        if mine is not None:
            for node in nodes:
                if node["path"] == worker:
                    node.update(restarts=mine["restarts"], last_exit=mine["last_exit"])
        return nodes

    async def command(self, client: UiClient, command: dict[str, Any]) -> None:
        kind = command["type"]
        if kind in ("send_p2p_message", "send_quic_message"):
            self.send_chat(client, command)
        elif kind in FORWARDED:
            sibling, make = FORWARDED[kind]
            try:
                self.ctx.ref(sibling).tell(make(command))
            except DecodeError as exc:  # a command's fields beyond COMMAND_FIELDS
                self.hub.send(client, error(exc.reason))
        elif kind == "ui_client_hello":
            self.hello(client)
        elif kind == "restart_worker_request":
            self.spawn(self.restart(client, command.get("path")))

    def send_chat(self, client: UiClient, command: dict[str, Any]) -> None:
        """Into the history as queued (every page shows it), then to udp or quic with its ref,
        whose ``chat_state`` events move it on: sent, delivered or failed."""
        transport = "udp" if command["type"] == "send_p2p_message" else "quic"
        ref = command.get("ref")
        if not isinstance(ref, str) or not ref or len(ref) > MAX_REF:
            ref = None
        entry = self.history.chat("out", transport, command["content"], "queued", ref=ref)
        self.hub.broadcast({"type": "chat", **entry})
        self.ctx.ref(transport).tell(ChatSend(command["content"], entry["ref"]))

    async def restart(self, client: UiClient, path: object) -> None:
        """Restart one subtree, or every child of the worker (this actor last: once it asks
        for its own restart, nobody is left to hear the answer)."""
        if path is not None and not isinstance(path, str):
            return self.hub.send(client, error("restart_worker_request: 'path' must be a string"))
        try:
            targets = await self.restart_targets(path or "")
            if path and (refused := await self.refusal(targets[0])):
                self.hub.send(client, restart_status(targets[0], "refused", refused))
                return self.hub.send(client, error(f"restart_worker_request: {refused}"))
            for target in targets:
                self.hub.send(client, restart_status(target, "restarting"))
                if target == self.ctx.path:
                    return self.supervisor.tell(RestartChild(target))
                result = await self.supervisor.ask(RestartChild(target), timeout=RESTART_TIMEOUT)
                self.hub.send(client, restart_status(target, str(result)))
        except ActorError as exc:
            self.hub.send(client, restart_status(str(path or self.supervisor.path), "refused",
                                                 exc.reason))
            self.hub.send(client, error(f"restart_worker_request: {exc.reason}"))

    async def refusal(self, target: str) -> str:
        """Why a restart of ``target`` is refused before it starts ("" if it is not)."""
        node = next((n for n in await self.tree() if n["path"] == target), None)
        if node is None:
            return f"{target} is not in this worker's tree"
        if node["state"] != "running":
            return f"{target} is {node['state']}"
        return ""

    async def restart_targets(self, path: str) -> list[str]:
        parent = self.supervisor.path
        if path and path != parent:
            return [path if "/" in path else f"{parent}/{path}"]
        nodes, depth = await self.tree(), parent.count("/") + 1
        children = [n["path"] for n in nodes
                    if n["path"].startswith(parent + "/") and n["path"].count("/") == depth]
        return sorted(children, key=lambda child: child == self.ctx.path)

    def status(self) -> dict[str, Any]:
        return {"worker_id": self.worker_id, "clients": len(self.hub.clients),
                "port": self.ctx.sockets["http"].getsockname()[1], **self.link.summary()}


def restart_status(path: str, status: str, reason: str = "") -> dict[str, Any]:
    return {"type": "restart_status", "path": path, "status": status, "reason": reason}


def path_status(msg: PathStatus) -> dict[str, Any]:
    """The UDP path for the page's badge: state, peer, endpoint, RTT."""
    return {"type": "path_status", "state": msg.state, "peer_id": msg.peer_id,
            "host": msg.host, "port": msg.port, "rtt_ms": round(msg.rtt * 1000, 3),
            "reason": msg.reason}


class History:
    """Tree events and chats, bounded rings saved under the run directory after each change,
    so a reloaded page, a restarted ui actor and a restarted worker all replay them."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.tree_events: deque[dict[str, Any]] = deque(maxlen=TREE_HISTORY)
        self.chats: deque[dict[str, Any]] = deque(maxlen=CHAT_HISTORY)
        self.benchmark: dict[str, Any] | None = None
        self.refs = itertools.count(1)
        saved = load_state(file)
        if isinstance(saved, dict):
            self.tree_events.extend(e for e in saved.get("tree_events") or []
                                    if isinstance(e, dict))
            self.chats.extend(c for c in saved.get("chats") or [] if isinstance(c, dict))
            if isinstance(saved.get("benchmark"), dict):
                self.benchmark = saved["benchmark"]
        self.incarnation = f"{time.time():.6f}"  # makes backend refs unique across restarts

    def replay(self) -> dict[str, Any]:
        return {"type": "history", "tree_events": list(self.tree_events),
                "chats": list(self.chats), "benchmark": self.benchmark}

    def tree_event(self, event: dict[str, Any]) -> None:
        self.tree_events.append(event)
        self.save()

    def chat(self, direction: str, transport: str, text: str, state: str, *,
             ref: str | None = None, peer: str = "") -> dict[str, Any]:
        entry = {"ref": ref or f"b{self.incarnation}-{next(self.refs)}",
                 "direction": direction, "transport": transport, "text": text,
                 "state": state, "reason": "", "peer": peer, "at": time.time()}
        self.chats.append(entry)
        self.save()
        return entry

    def chat_state(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """Move a chat on; a late "sent" never overwrites "delivered" or "failed"."""
        entry = next((c for c in reversed(self.chats) if c["ref"] == event.get("ref")), None)
        if entry is None:
            return None
        state = str(event.get("state", ""))
        if RANK.get(state, 0) < RANK.get(entry["state"], 0):
            return entry
        entry.update(state=state, reason=str(event.get("reason", "")))
        self.save()
        return entry

    def save(self) -> None:
        save_state(self.file, {"tree_events": list(self.tree_events), "chats": list(self.chats),
                               "benchmark": self.benchmark})


RANK = {"queued": 0, "sent": 1, "delivered": 2, "failed": 2}



@dataclass
class LinkState:
    """What the udp, quic and stun actors last said about the path, the tunnel and the mapping."""

    path: PathStatus | None = None
    tunnel: TunnelStatus | None = None
    stun: StunResult | None = None
    rendezvous: dict[str, Any] | None = None  # the last rendezvous_status event

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
                           "message": f"P2P link {verb} with {short(peer)}"})
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


def short(peer_id: str) -> str:
    """A peer id for a status line: ellipsis only when it was cut."""
    return peer_id if len(peer_id) <= 12 else peer_id[:8] + "..."
