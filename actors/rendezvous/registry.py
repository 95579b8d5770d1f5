"""The registry actor: the shell around ``protocol.rendezvous.registry.WorkerRegistry``.

It learns what workers say from the edge, keeps their records, tells the pairing actor who may
be paired or is gone, and sends each record back to the edge with any reply for the worker. The
edge keeps those records next to the connections; a new incarnation (after a kill -9) rebuilds
from them before it handles any message, so no registered worker is lost.
"""

from __future__ import annotations

import logging
from typing import Any

from actors.actor import Actor
from actors.rendezvous import read_ledger
from messages.errors import IllegalTransition, PeerError, UsageError
from messages.rendezvous import (
    CloseWorker,
    DeregisterRequested,
    EdgeStarted,
    EndpointReported,
    PairRequest,
    PeerRequested,
    PublicIpReported,
    WorkerConnected,
    WorkerDisconnected,
    WorkerGone,
    WorkerReady,
    WorkerUpdate,
)
from protocol.rendezvous import wire
from protocol.rendezvous.pairing import REASON_DEREGISTERED, REASON_DISCONNECTED, REASON_REPLACED
from protocol.rendezvous.registry import MAX_WORKERS, WorkerRecord, WorkerRegistry

log = logging.getLogger(__name__)

# WebSocket close code (RFC 6455 section 7.4.1, 1013 "Try Again Later") for a full service.
CLOSE_FULL = 1013


class RegistryActor(Actor):
    def on_start(self) -> None:
        self.edge = self.ctx.ref("edge")
        self.pairing = self.ctx.ref("pairing")
        self.max_workers = int(self.ctx.config.get("max_workers", MAX_WORKERS))
        self.registry = WorkerRegistry(self.max_workers)
        self.rebuilt = self.ctx.spawn(self.rebuild())

    async def rebuild(self) -> None:
        sessions, _ = await read_ledger(self.edge)
        records = [session_record(session) for session in sessions]
        self.registry = WorkerRegistry.restore({"workers": records}, self.max_workers)
        log.info("registry rebuilt from the edge", extra={"workers": len(records)})

    async def on_receive(self, msg: Any) -> Any:
        if not self.rebuilt.done():
            await self.rebuilt
        self.rebuilt.result()  # a failed rebuild crashes this incarnation; the next one retries
        try:
            return self.handle(msg)
        except IllegalTransition as refused:
            self.reply(msg.worker_id, msg.connection_id, wire.error(refused.reason, refused.code))
        except UsageError as stale:  # about a connection already closed or replaced
            log.debug("message about a stale connection ignored", extra={"error": str(stale)})
        return None

    def handle(self, msg: Any) -> Any:
        if isinstance(msg, WorkerConnected):
            return self.connected(msg)
        if isinstance(msg, PublicIpReported):
            record = self.registry.update_public_ip(msg.worker_id, msg.connection_id, msg.ip,
                                                    msg.cert_fingerprint)
            return self.changed(record, None)
        if isinstance(msg, EndpointReported):
            record = self.registry.update_endpoint(msg.worker_id, msg.connection_id, msg.udp_ip,
                                                   msg.udp_port, msg.cert_fingerprint)
            return self.changed(record, wire.udp_endpoint_ack(msg.udp_ip, msg.udp_port))
        if isinstance(msg, DeregisterRequested):
            record = self.registry.deregister(msg.worker_id, msg.connection_id)
            self.pairing.tell(WorkerGone(msg.worker_id, msg.connection_id, REASON_DEREGISTERED))
            return self.changed(record, None)
        if isinstance(msg, PeerRequested):
            return self.peer_requested(msg)
        if isinstance(msg, WorkerDisconnected):
            return self.disconnected(msg.worker_id, msg.connection_id)
        if isinstance(msg, EdgeStarted):
            return self.edge_started(msg.first_connection_id)
        return super().on_receive(msg)

    def connected(self, msg: WorkerConnected) -> None:
        known = self.registry.get(msg.worker_id)
        if known is not None and known.connection_id == msg.connection_id:
            return self.changed(known, None)  # redelivered, or already rebuilt from the edge
        try:
            stale = self.registry.connect(msg.worker_id, msg.connection_id, msg.observed_ip,
                                          msg.observed_port, msg.connected_since)
        except PeerError as full:
            self.edge.tell(CloseWorker(msg.worker_id, msg.connection_id, CLOSE_FULL, full.reason))
            return None
        if stale is not None:
            self.pairing.tell(WorkerGone(stale.worker_id, stale.connection_id, REASON_REPLACED))
        return self.changed(self.registry.get(msg.worker_id), None)

    def changed(self, record: WorkerRecord | None, reply: dict[str, Any] | None) -> None:
        if record is None:
            return
        self.edge.tell(WorkerUpdate(record.worker_id, record.connection_id, record.as_dict(),
                                    reply))
        candidate = record.candidate()
        if candidate is not None:
            self.pairing.tell(WorkerReady(record.worker_id, record.connection_id,
                                          candidate.udp_ip, candidate.udp_port,
                                          candidate.cert_fingerprint))

    def peer_requested(self, msg: PeerRequested) -> None:
        record = self.registry.get(msg.worker_id)
        if record is None or record.connection_id != msg.connection_id:
            return
        self.pairing.tell(PairRequest(msg.worker_id, msg.connection_id, msg.peer_worker_id))

    def disconnected(self, worker_id: str, connection_id: int) -> None:
        self.registry.disconnect(worker_id, connection_id)
        # Told even when no record matched: the pairing actor may know the connection from a
        # rebuild this registry never saw; it ignores a connection id it does not hold.
        self.pairing.tell(WorkerGone(worker_id, connection_id, REASON_DISCONNECTED))

    def edge_started(self, first_connection_id: int) -> None:
        workers = self.registry.snapshot()["workers"]
        dead = [(w["worker_id"], w["connection_id"]) for w in workers
                if w["connection_id"] < first_connection_id]
        for worker_id, connection_id in dead:
            self.disconnected(worker_id, connection_id)
        if dead:
            log.warning("dropped the connections of a dead edge", extra={"workers": len(dead)})

    def reply(self, worker_id: str, connection_id: int, payload: dict[str, Any]) -> None:
        self.edge.tell(WorkerUpdate(worker_id, connection_id, None, payload))


def session_record(session: dict[str, Any]) -> dict[str, Any]:
    """The record the edge kept for a session, or a fresh one if none reached it yet."""
    if session.get("record"):
        return dict(session["record"]) | {"paired_peer": None}
    return WorkerRecord(session["worker_id"], session["connection_id"], session["observed_ip"],
                        session["observed_port"], session["connected_since"]).as_dict()
