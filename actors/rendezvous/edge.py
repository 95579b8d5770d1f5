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
    CLOSE_IDENTITY,
    CLOSE_REPLACED,
    MAX_WS_FRAME_BYTES,
    EdgeSettings,
    Session,
    build_app,
)
from actors.rendezvous.http_guard import HEADER_TIMEOUT, PER_ADDRESS, guarded_protocols
from actors.web import HostedApp
from messages.errors import AuthError, DecodeError, UsageError
from messages.rendezvous import (
    PAGE_SIZE,
    CloseWorker,
    Deliver,
    DeregisterRequested,
    EdgeStarted,
    EndpointReported,
    LedgerRequest,
    PeerRequested,
    PublicIpReported,
    WorkerConnected,
    WorkerDisconnected,
    WorkerUpdate,
)
from protocol.rendezvous import wire
from protocol.rendezvous.identity import (
    DEFAULT_GRACE,
    IDENTITY_WINDOW,
    Admission,
    IdentityTable,
    verify_proof,
)

log = logging.getLogger(__name__)

# Seconds uvicorn waits for open connections on the way out; the supervisor's shutdown timeout
# (5 s by default) must exceed it.
GRACEFUL_SHUTDOWN = 2.0
# WebSocket keepalive (RFC 6455 section 5.5.2): a dead worker is noticed within ping+timeout.
PING_INTERVAL = PING_TIMEOUT = 20.0


class EdgeActor(Actor):
    async def on_start(self) -> None:
        cfg = self.ctx.config
        settings = EdgeSettings(
            token=cfg.get("token"), admin_token=cfg.get("admin_token"),
            trusted_proxies=tuple(cfg.get("trusted_proxies", ())),
            max_workers=int(cfg.get("max_workers", 1000)),
            allow_unproven=bool(cfg.get("allow_unproven", True)),
            identity_grace=float(cfg.get("identity_grace", DEFAULT_GRACE)),
            identity_window=float(cfg.get("identity_window", IDENTITY_WINDOW)))
        registry = self.ctx.ref("registry")
        self.hub = Hub(registry, self.ctx.ref("pairing"), settings, first_connection_id())
        guard = guarded_protocols(float(cfg.get("header_timeout", HEADER_TIMEOUT)),
                                  int(cfg.get("per_address", PER_ADDRESS)))
        self.web = HostedApp(
            build_app(self.hub, settings), self.ctx.sockets["http"], proxy_headers=False,
            ws_max_size=MAX_WS_FRAME_BYTES, ws_ping_interval=PING_INTERVAL,
            ws_ping_timeout=PING_TIMEOUT, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN, **guard)
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
        self.identities = IdentityTable(allow_unproven=settings.allow_unproven,
                                        grace=settings.identity_grace)
        self.waiting = 0  # connections that must prove before they hold their id

    def open(self, worker_id: str, websocket: WebSocket, ip: str, port: int | None,
             nonce: str) -> Session:
        """A new connection: it holds its id at once if no key owns it (and unproven ids are
        allowed); otherwise it waits for its proof."""
        session = Session(worker_id, self.next_connection_id, websocket, ip, port,
                          self.settings, nonce)
        self.next_connection_id += 1
        if self.identities.on_connect(worker_id, time.monotonic()) is Admission.ADMIT:
            self.admit(session)
        else:
            session.waiting = True
            self.waiting += 1
        return session

    def admit(self, session: Session) -> None:
        """``session`` takes its worker id, replacing the connection that held it."""
        if session.waiting:
            session.waiting = False
            self.waiting -= 1
        old = self.sessions.get(session.worker_id)
        if old is not None and old is not session:
            old.close(CLOSE_REPLACED, "replaced by a newer connection with the same worker id")
        session.admitted = True
        self.sessions[session.worker_id] = session
        self.registry.tell(WorkerConnected(session.worker_id, session.connection_id,
                                           session.observed_ip, session.observed_port,
                                           session.connected_since))

    def refuse(self, session: Session, reason: str) -> None:
        log.warning("identity refused", extra={"worker": session.worker_id, "reason": reason})
        session.close(CLOSE_IDENTITY, reason[:120])

    def closed(self, session: Session) -> None:
        session.stop()
        if session.waiting:
            session.waiting = False
            self.waiting -= 1
        if self.sessions.get(session.worker_id) is session:
            del self.sessions[session.worker_id]
            if session.proven:
                self.identities.disconnected(session.worker_id, session.proven,
                                             time.monotonic())
        if session.admitted:
            self.registry.tell(WorkerDisconnected(session.worker_id, session.connection_id))

    def received(self, session: Session, frame: str | bytes) -> None:
        if session.closing:
            return
        if not session.allow(time.monotonic()):
            session.send(wire.error(f"over {self.settings.rate_per_second:g} messages per "
                                    "second: message dropped", "rate_limited"))
            return
        nonce, session.nonce = session.nonce, ""  # good for the first message only
        try:
            message = wire.parse_client_message(frame)
        except DecodeError as bad:
            if self.may_speak(session):
                session.send(wire.error(bad.reason, bad.code))
            return
        if isinstance(message, wire.IdentityProof):
            return self.prove(session, message, nonce)
        if self.may_speak(session):
            self.dispatch(session, message)

    def may_speak(self, session: Session) -> bool:
        """A waiting connection that speaks without proving is admitted only for a free id."""
        if not session.waiting:
            return True
        if self.identities.on_unproven_frame(session.worker_id, time.monotonic()) is \
                Admission.ADMIT:
            self.admit(session)
            return True
        self.refuse(session, f"worker id {session.worker_id} needs an identity_proof first")
        return False

    def prove(self, session: Session, proof: wire.IdentityProof, nonce: str) -> None:
        if not nonce:
            session.send(wire.error("identity_proof must be the first message of a connection",
                                    "proof_too_late"))
            return
        try:
            proven = verify_proof(proof.certificate, proof.signature, nonce, session.worker_id)
        except (AuthError, DecodeError) as bad:
            return self.refuse(session, f"identity proof failed: {bad.reason}")
        if self.identities.on_proof(session.worker_id, proven, time.monotonic()) is \
                Admission.REFUSE:
            return self.refuse(session, f"worker id {session.worker_id} belongs to another key")
        session.proven = proven
        if not session.admitted:
            self.admit(session)
        session.send({"type": "identity_accepted", "cert_fingerprint": proven})

    def dispatch(self, session: Session, message: wire.ClientMessage) -> None:
        worker_id, connection_id = session.worker_id, session.connection_id
        if isinstance(message, wire.EchoRequest):
            session.send(wire.echo_response(message.payload, worker_id))
        elif session.deregistered:
            session.send(wire.error(f"worker {worker_id} is deregistered: {message.TYPE} not "
                                    "allowed", "illegal_transition"))
        elif isinstance(message, wire.RegisterPublicIp):
            fingerprint = self.fingerprint_of(session, message.cert_fingerprint)
            self.registry.tell(PublicIpReported(worker_id, connection_id, message.ip,
                                                fingerprint))
        elif isinstance(message, wire.UpdateUdpEndpoint):
            fingerprint = self.fingerprint_of(session, message.cert_fingerprint)
            self.registry.tell(EndpointReported(worker_id, connection_id, message.udp_ip,
                                                message.udp_port, fingerprint))
        elif isinstance(message, wire.ExplicitDeregister):
            self.deregister(session)
        elif isinstance(message, wire.ConnectRequest):
            self.registry.tell(PeerRequested(worker_id, connection_id, message.peer_worker_id))

    def fingerprint_of(self, session: Session, announced: str | None) -> str | None:
        """Offers carry only a proven fingerprint: an announced one is never believed."""
        if announced is not None and announced != session.proven:
            session.send(wire.error("cert_fingerprint ignored: offers carry only the "
                                    "fingerprint of the key proven by identity_proof",
                                    "fingerprint_not_proven"))
        return session.proven

    def deregister(self, session: Session) -> None:
        """``explicit_deregister``: out of the listing and the count at once, the id free."""
        self.registry.tell(DeregisterRequested(session.worker_id, session.connection_id))
        session.deregistered = True
        if self.sessions.get(session.worker_id) is session:
            del self.sessions[session.worker_id]
            if session.proven:
                self.identities.release(session.worker_id)

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

    def listing(self) -> dict[str, Any]:
        """``/debug/list_workers``, from the ledger beside each connection: the registry's
        last record and the last offer relayed. One pass over the sessions, no actor asked:
        the pairing actor rebuilds from this same ledger after a crash."""
        workers: dict[str, Any] = {}
        ready: list[tuple[int, str]] = []
        pairs: set[tuple[str, str]] = set()
        for worker_id, session in self.sessions.items():
            entry = session.listing()
            if entry is None:
                continue
            workers[worker_id] = entry
            if session.peer is not None:
                pairs.add(tuple(sorted((worker_id, session.peer))))  # type: ignore[arg-type]
            elif entry["state"] == "ready" and session.ready_order is not None:
                ready.append((session.ready_order, worker_id))
        ready_list = [worker_id for _, worker_id in sorted(ready)]
        return {"connected_workers_count": len(workers), "workers": workers,
                "ready_for_pairing_count": len(ready_list), "ready_list": ready_list,
                "pairs": [list(pair) for pair in sorted(pairs)]}

    async def close_all(self, code: int, reason: str) -> None:
        for session in list(self.sessions.values()):
            session.close(code, reason)
        await asyncio.gather(*(s.writer for s in self.sessions.values()),
                             return_exceptions=True)


def first_connection_id() -> int:
    """Microseconds since the epoch: above every id a predecessor handed out (it would have
    needed more than a connection per microsecond to catch up with the clock)."""
    return time.time_ns() // 1000
