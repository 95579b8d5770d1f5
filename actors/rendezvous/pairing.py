"""The pairing actor: the shell around ``protocol.rendezvous.pairing.PairingTable``.

The registry tells it who may be paired (``WorkerReady``) and who left (``WorkerGone``); it sends
offers and ``peer_disconnected`` notices to the workers through the edge (``Deliver``). The edge
remembers which offers it relayed; a new incarnation (after a kill -9) rebuilds the table from
that — the pairs the workers were actually told about — and pairs whoever is left waiting.

Every worker is known with the id of its connection. A message about an older connection than
the one held is stale and ignored; so is one about a connection the edge had already closed when
the table was rebuilt (its id is below the edge's ``next_connection_id`` of that moment, and the
edge no longer held it).
"""

from __future__ import annotations

import logging
from typing import Any

from actors.actor import Actor
from actors.rendezvous import read_ledger
from messages.rendezvous import (
    Deliver,
    PairRequest,
    WorkerGone,
    WorkerReady,
)
from protocol.rendezvous.pairing import (
    Candidate,
    PairFormed,
    PairingEvent,
    PairingTable,
    PeerLeft,
    PeerMoved,
    RequestRefused,
)

log = logging.getLogger(__name__)


class PairingActor(Actor):
    def on_start(self) -> None:
        self.edge = self.ctx.ref("edge")
        self.table = PairingTable()
        self.connections: dict[str, int] = {}  # worker id -> the connection it is known by
        self.live_at_rebuild: dict[str, int] = {}
        self.closed_below = 0
        self.rebuilt = self.ctx.spawn(self.rebuild())

    async def rebuild(self) -> None:
        sessions, next_connection_id = await read_ledger(self.edge)
        self.table = PairingTable.restore(table_snapshot(sessions))
        self.live_at_rebuild = {s["worker_id"]: s["connection_id"] for s in sessions}
        self.connections = {c["worker_id"]: self.live_at_rebuild[c["worker_id"]]
                            for c in table_snapshot(sessions)["candidates"]}
        self.closed_below = next_connection_id
        log.info("pairing rebuilt from the edge", extra={"workers": len(self.connections)})
        self.deliver(self.table.pair_waiting())

    async def on_receive(self, msg: Any) -> Any:
        if not self.rebuilt.done():
            await self.rebuilt
        self.rebuilt.result()  # a failed rebuild crashes this incarnation; the next one retries
        if isinstance(msg, WorkerReady):
            return self.ready(msg)
        if isinstance(msg, WorkerGone):
            return self.gone(msg)
        if isinstance(msg, PairRequest):
            return self.deliver(self.table.connect_request(msg.worker_id, msg.peer_worker_id),
                                {msg.worker_id: msg.connection_id})
        return super().on_receive(msg)

    def ready(self, msg: WorkerReady) -> None:
        if self.stale(msg.worker_id, msg.connection_id):
            log.debug("readiness of a closed connection ignored", extra={"worker": msg.worker_id})
            return
        self.connections[msg.worker_id] = msg.connection_id
        candidate = Candidate(msg.worker_id, msg.udp_ip, msg.udp_port, msg.cert_fingerprint)
        self.deliver(self.table.worker_ready(candidate))

    def gone(self, msg: WorkerGone) -> None:
        if self.connections.get(msg.worker_id) != msg.connection_id:
            return  # not a candidate, or not by this connection: nothing to undo
        events = self.table.worker_gone(msg.worker_id, msg.reason)
        del self.connections[msg.worker_id]
        self.deliver(events)

    def stale(self, worker_id: str, connection_id: int) -> bool:
        if connection_id < self.connections.get(worker_id, connection_id):
            return True
        closed = connection_id < self.closed_below
        return closed and self.live_at_rebuild.get(worker_id) != connection_id

    def deliver(self, events: list[PairingEvent], known: dict[str, int] | None = None) -> None:
        for event in events:
            for out in outbound(event):
                connection_id = self.connections.get(out.worker_id)
                if connection_id is None and known:
                    connection_id = known.get(out.worker_id)
                if connection_id is not None:
                    self.edge.tell(Deliver(out.worker_id, connection_id, out.message))


def outbound(event: PairingEvent) -> tuple[Any, ...]:
    if isinstance(event, PairFormed):
        return event.offers
    if isinstance(event, PeerLeft):
        return (event.notice,)
    if isinstance(event, PeerMoved):
        return (event.offer,)
    if isinstance(event, RequestRefused):
        return (event.reply,)
    return ()


def table_snapshot(sessions: list[dict[str, Any]]) -> dict[str, Any]:
    """A ``PairingTable`` snapshot from the edge's sessions: the ready workers, the pairs whose
    two offers were both relayed, and everyone else waiting in the order they became ready."""
    ready = sorted((s for s in sessions if candidate_of(s)), key=lambda s: s["ready_order"])
    by_id = {s["worker_id"]: s for s in ready}
    pairs = {}
    for session in ready:
        peer = by_id.get(session["peer"] or "")
        if peer and peer["peer"] == session["worker_id"] and peer["punch_token"] == \
                session["punch_token"]:
            first, second = sorted((session["worker_id"], peer["worker_id"]))
            pairs[first] = {"first": first, "second": second, "punch_token": peer["punch_token"]}
    paired = {member for pair in pairs.values() for member in (pair["first"], pair["second"])}
    return {"candidates": [candidate_of(s) for s in ready], "pairs": list(pairs.values()),
            "waiting": [s["worker_id"] for s in ready if s["worker_id"] not in paired]}


def candidate_of(session: dict[str, Any]) -> dict[str, Any] | None:
    record = session.get("record") or {}
    if record.get("state") != "ready" or record.get("udp_ip") is None:
        return None
    return {"worker_id": session["worker_id"], "udp_ip": record["udp_ip"],
            "udp_port": record["udp_port"], "cert_fingerprint": record.get("cert_fingerprint")}
