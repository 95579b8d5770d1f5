"""The edge actor: the Starlette app (``edge_app``) served by uvicorn in this actor's own event
loop, on the TCP socket its supervisor bound, and ``Hub``, the table of live WebSocket sessions.

The hub forwards what workers say to the registry, sends workers what the registry and the
pairing actor tell it, and keeps a ledger beside each connection: the registry's last record of
it and the last offer relayed to it. The registry and pairing actors rebuild from that ledger
after a kill -9 (``LedgerRequest``). If the edge itself dies, its connections die with it; the
next incarnation announces the first connection id it will use (``EdgeStarted``), and the
registry drops every record of an older one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

from starlette.websockets import WebSocket

from actors.actor import Actor, Ref
from actors.rendezvous.edge_app import (
    CLOSE_REPLACED,
    MAX_WS_FRAME_BYTES,
    EdgeSettings,
    Session,
    build_app,
)
from actors.web import HostedApp
from messages.errors import DecodeError, UsageError
from messages.rendezvous import (
    PAGE_SIZE,
    CloseWorker,
    Deliver,
    DeregisterRequested,
    EdgeStarted,
    EndpointReported,
    LedgerRequest,
    PairingPageRequest,
    PeerRequested,
    PublicIpReported,
    RecordsPageRequest,
    WorkerConnected,
    WorkerDisconnected,
    WorkerUpdate,
)
from protocol.rendezvous import wire

log = logging.getLogger(__name__)

# Seconds uvicorn waits for open connections on the way out; the supervisor's shutdown timeout
# (5 s by default) must exceed it.
GRACEFUL_SHUTDOWN = 2.0
# WebSocket keepalive (RFC 6455 section 5.5.2): a dead worker is noticed within ping+timeout.
PING_INTERVAL = PING_TIMEOUT = 20.0


class EdgeActor(Actor):
    async def on_start(self) -> None:
        settings = EdgeSettings(
            token=self.ctx.config.get("token"),
            trusted_proxies=tuple(self.ctx.config.get("trusted_proxies", ())),
            max_workers=int(self.ctx.config.get("max_workers", 1000)))
        registry = self.ctx.ref("registry")
        self.hub = Hub(registry, self.ctx.ref("pairing"), settings, first_connection_id())
        self.web = HostedApp(
            build_app(self.hub, settings), self.ctx.sockets["http"], proxy_headers=False,
            ws_max_size=MAX_WS_FRAME_BYTES, ws_ping_interval=PING_INTERVAL,
            ws_ping_timeout=PING_TIMEOUT, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN)
        await self.web.start()
        registry.tell(EdgeStarted(self.hub.first_connection_id))

    def on_receive(self, msg: Any) -> Any:
        if isinstance(msg, WorkerUpdate):
            return self.hub.update(msg)
        if isinstance(msg, Deliver):
            return self.hub.deliver(msg)
        if isinstance(msg, CloseWorker):
            return self.hub.close_worker(msg)
        if isinstance(msg, LedgerRequest):
            return self.hub.ledger(msg)
        return super().on_receive(msg)

    async def on_stop(self) -> None:
        await self.web.stop()


class Hub:
    """The live sessions by worker id, and what crosses between them and the other actors."""

    def __init__(self, registry: Ref, pairing: Ref, settings: EdgeSettings,
                 first_id: int) -> None:
        self.registry, self.pairing, self.settings = registry, pairing, settings
        self.first_connection_id = first_id
        self.sessions: dict[str, Session] = {}
        self.next_connection_id = first_id
        self.ready_orders = itertools.count()
        self.snapshots: dict[int, list[dict[str, Any]]] = {}
        self.snapshot_ids = itertools.count(1)

    def open(self, worker_id: str, websocket: WebSocket, ip: str, port: int | None) -> Session:
        old = self.sessions.get(worker_id)
        if old is not None:
            old.close(CLOSE_REPLACED, "replaced by a newer connection with the same worker id")
        session = Session(worker_id, self.next_connection_id, websocket, ip, port,
                          self.settings)
        self.next_connection_id += 1
        self.sessions[worker_id] = session
        self.registry.tell(WorkerConnected(worker_id, session.connection_id, ip, port,
                                           session.connected_since))
        return session

    def closed(self, session: Session) -> None:
        session.stop()
        if self.sessions.get(session.worker_id) is session:
            del self.sessions[session.worker_id]
        self.registry.tell(WorkerDisconnected(session.worker_id, session.connection_id))

    def received(self, session: Session, frame: str | bytes) -> None:
        if not session.allow(time.monotonic()):
            session.send(wire.error(f"over {self.settings.rate_per_second:g} messages per "
                                    "second: message dropped", "rate_limited"))
            return
        try:
            message = wire.parse_client_message(frame)
        except DecodeError as bad:
            session.send(wire.error(bad.reason, bad.code))
            return
        self.dispatch(session, message)

    def dispatch(self, session: Session, message: wire.ClientMessage) -> None:
        worker_id, connection_id = session.worker_id, session.connection_id
        if isinstance(message, wire.EchoRequest):
            session.send(wire.echo_response(message.payload, worker_id))
        elif isinstance(message, wire.RegisterPublicIp):
            self.registry.tell(PublicIpReported(worker_id, connection_id, message.ip,
                                                message.cert_fingerprint))
        elif isinstance(message, wire.UpdateUdpEndpoint):
            self.registry.tell(EndpointReported(worker_id, connection_id, message.udp_ip,
                                                message.udp_port, message.cert_fingerprint))
        elif isinstance(message, wire.ExplicitDeregister):
            self.registry.tell(DeregisterRequested(worker_id, connection_id))
        elif isinstance(message, wire.ConnectRequest):
            self.registry.tell(PeerRequested(worker_id, connection_id, message.peer_worker_id))

    def session_of(self, worker_id: str, connection_id: int) -> Session | None:
        session = self.sessions.get(worker_id)
        return session if session and session.connection_id == connection_id else None

    def update(self, msg: WorkerUpdate) -> None:
        session = self.session_of(msg.worker_id, msg.connection_id)
        if session is None:
            return
        if msg.record is not None:
            session.record = msg.record
            if msg.record.get("state") == "ready" and session.ready_order is None:
                session.ready_order = next(self.ready_orders)
        if msg.reply is not None:
            session.send(msg.reply)

    def deliver(self, msg: Deliver) -> None:
        session = self.session_of(msg.worker_id, msg.connection_id)
        if session is None:
            return
        kind = msg.payload.get("type")
        if kind == "p2p_connection_offer":
            session.peer, session.punch_token = (msg.payload["peer_worker_id"],
                                                 msg.payload["punch_token"])
        elif kind == "peer_disconnected" and msg.payload.get("peer_worker_id") == session.peer:
            session.peer = session.punch_token = None
        session.send(msg.payload)

    def close_worker(self, msg: CloseWorker) -> None:
        session = self.session_of(msg.worker_id, msg.connection_id)
        if session is not None:
            session.close(msg.code, msg.reason)

    def ledger(self, request: LedgerRequest) -> dict[str, Any]:
        snapshot_id = request.snapshot_id or next(self.snapshot_ids)
        if request.snapshot_id == 0:
            self.snapshots[snapshot_id] = [s.as_dict() for s in self.sessions.values()]
        sessions = self.snapshots.get(snapshot_id)
        if sessions is None:
            raise UsageError(f"no ledger snapshot {snapshot_id}", code="unknown_snapshot")
        end = request.offset + max(1, min(request.limit, PAGE_SIZE))
        if end >= len(sessions):
            del self.snapshots[snapshot_id]
        return {"snapshot_id": snapshot_id, "sessions": sessions[request.offset:end],
                "more": end < len(sessions), "next_connection_id": self.next_connection_id}

    async def listing(self) -> dict[str, Any]:
        """``/debug/list_workers``: the registry's records and the pairing table, merged."""
        workers: dict[str, Any] = {}
        pairing: dict[str, Any] = {"ready_list": [], "pairs": []}
        more = True
        while more:
            page = await self.registry.ask(RecordsPageRequest(len(workers)))
            workers.update(page["workers"])
            more = page["more"] and bool(page["workers"])
        for offset in itertools.count(0, PAGE_SIZE):
            page = await self.pairing.ask(PairingPageRequest(offset))
            pairing["ready_list"] += page["ready_list"]
            pairing["pairs"] += page["pairs"]
            if not page["more"]:
                break
        peers = {a: b for pair in pairing["pairs"] for a, b in (pair, pair[::-1])}
        for worker_id, entry in workers.items():
            entry["paired_peer"] = peers.get(worker_id)
        return {"connected_workers_count": len(workers), "workers": workers,
                "ready_for_pairing_count": len(pairing["ready_list"]), **pairing}

    async def close_all(self, code: int, reason: str) -> None:
        for session in list(self.sessions.values()):
            session.close(code, reason)
        await asyncio.gather(*(s.writer for s in self.sessions.values()),
                             return_exceptions=True)


def first_connection_id() -> int:
    """Microseconds since the epoch: above every id a predecessor handed out (it would have
    needed more than a connection per microsecond to catch up with the clock)."""
    return time.time_ns() // 1000
