"""The rendezvous service's worker records, sans-I/O.

The edge owns the WebSocket connections and names each one with a ``connection_id``; every call
here carries it, so a message or a close from a connection that was already replaced cannot touch
the new connection's record. A record's ``WorkerState`` moves along ``TRANSITIONS``;
``next_state`` is the one place that allows a move. A worker is a pairing candidate only while
READY: an open connection and a UDP endpoint.

Typical wiring (the registry actor):
- ``connect`` returned a stale record: close that connection, pairing ``worker_gone(id, ...)``;
- ``update_endpoint``/``update_public_ip``: if ``record.candidate()``, pairing ``worker_ready``;
- ``deregister``/``disconnect``: pairing ``worker_gone``; pairing's events: ``apply_pairing``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from enum import Enum
from typing import Any

from messages.errors import DecodeError, IllegalTransition, PeerError, UsageError
from protocol.rendezvous import wire
from protocol.rendezvous.pairing import Candidate, PairFormed, PairingEvent, PeerLeft

logger = logging.getLogger(__name__)

# Every record holds a live WebSocket at the edge; the cap keeps a flood of connections from
# exhausting the service's memory and file descriptors.
MAX_WORKERS = 1000


class WorkerState(Enum):
    CONNECTED = "connected"  # WebSocket open, no UDP endpoint yet
    READY = "ready"  # WebSocket open and UDP endpoint known: may be paired
    DEREGISTERED = "deregistered"  # the worker said goodbye: the record is removed


class WorkerEvent(Enum):
    PUBLIC_IP = "register_public_ip"
    ENDPOINT = "update_udp_endpoint"
    DEREGISTER = "explicit_deregister"


TRANSITIONS: dict[tuple[WorkerState, WorkerEvent], WorkerState] = {
    (WorkerState.CONNECTED, WorkerEvent.PUBLIC_IP): WorkerState.CONNECTED,
    (WorkerState.CONNECTED, WorkerEvent.ENDPOINT): WorkerState.READY,
    (WorkerState.CONNECTED, WorkerEvent.DEREGISTER): WorkerState.DEREGISTERED,
    (WorkerState.READY, WorkerEvent.PUBLIC_IP): WorkerState.READY,
    (WorkerState.READY, WorkerEvent.ENDPOINT): WorkerState.READY,
    (WorkerState.READY, WorkerEvent.DEREGISTER): WorkerState.DEREGISTERED,
}


def next_state(worker_id: str, state: WorkerState, event: WorkerEvent) -> WorkerState:
    """The state after ``event`` (logged), or ``IllegalTransition``."""
    new = TRANSITIONS.get((state, event))
    if new is None:
        raise IllegalTransition(f"worker {worker_id} is {state.value}: {event.value} not allowed")
    logger.info("worker %s: %s -> %s", worker_id, state.value, new.value)
    return new


@dataclass(frozen=True)
class WorkerRecord:
    worker_id: str
    connection_id: int
    observed_ip: str  # the WebSocket peer address the edge saw
    observed_port: int | None
    connected_since: float
    state: WorkerState = WorkerState.CONNECTED
    reported_ip: str | None = None  # register_public_ip (the worker's HTTP-derived view)
    udp_ip: str | None = None  # update_udp_endpoint (the worker's STUN mapping)
    udp_port: int | None = None
    cert_fingerprint: str | None = None
    paired_peer: str | None = None

    def candidate(self) -> Candidate | None:
        if self.state is not WorkerState.READY or self.udp_ip is None or self.udp_port is None:
            return None
        return Candidate(self.worker_id, self.udp_ip, self.udp_port, self.cert_fingerprint)

    def listing(self) -> dict[str, Any]:
        """One entry of ``/debug/list_workers``: the original's fields, then the new ones."""
        return listing_entry(self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"state": self.state.value}


def listing_entry(record: dict[str, Any]) -> dict[str, Any]:
    """A listing entry from a record's plain form (``WorkerRecord.as_dict``)."""
    return {
        "websocket_observed_ip": record["observed_ip"],
        "websocket_observed_port": record["observed_port"],
        "http_reported_public_ip": record["reported_ip"],
        "stun_reported_udp_ip": record["udp_ip"],
        "stun_reported_udp_port": record["udp_port"],
        "websocket_connected": True,  # records exist only while the connection is open
        "state": record["state"], "cert_fingerprint": record["cert_fingerprint"],
        "connected_since": record["connected_since"], "paired_peer": record["paired_peer"],
    }


class WorkerRegistry:
    def __init__(self, max_workers: int = MAX_WORKERS) -> None:
        self.max_workers = max_workers
        self._records: dict[str, WorkerRecord] = {}

    def __len__(self) -> int:
        return len(self._records)

    def get(self, worker_id: str) -> WorkerRecord | None:
        return self._records.get(worker_id)

    def connect(
        self, worker_id: str, connection_id: int, observed_ip: str, observed_port: int | None,
        now: float,
    ) -> WorkerRecord | None:
        """Record a new connection; return the stale record it replaced (close that one)."""
        wire.validate_worker_id(worker_id)
        stale = self._records.get(worker_id)
        if stale is None and len(self._records) >= self.max_workers:
            raise PeerError(
                f"the service holds its maximum of {self.max_workers} workers; retry later",
                code="registry_full",
            )
        record = WorkerRecord(worker_id, connection_id, observed_ip, observed_port, now)
        self._records[worker_id] = record
        return stale

    def update_public_ip(
        self, worker_id: str, connection_id: int, ip: str, cert_fingerprint: str | None = None,
    ) -> WorkerRecord:
        return self._apply(worker_id, connection_id, WorkerEvent.PUBLIC_IP, reported_ip=ip,
                           cert_fingerprint=cert_fingerprint)

    def update_endpoint(
        self, worker_id: str, connection_id: int, udp_ip: str, udp_port: int,
        cert_fingerprint: str | None = None,
    ) -> WorkerRecord:
        return self._apply(worker_id, connection_id, WorkerEvent.ENDPOINT, udp_ip=udp_ip,
                           udp_port=udp_port, cert_fingerprint=cert_fingerprint)

    def deregister(self, worker_id: str, connection_id: int) -> WorkerRecord:
        """The worker said goodbye: its record leaves the registry at once, as in the
        original (the connection may stay open; the edge refuses what it says next)."""
        record = self._apply(worker_id, connection_id, WorkerEvent.DEREGISTER)
        del self._records[worker_id]
        return record

    def disconnect(self, worker_id: str, connection_id: int) -> WorkerRecord | None:
        """Forget the record if ``connection_id`` still holds it; None for a stale close."""
        record = self._records.get(worker_id)
        if record is None or record.connection_id != connection_id:
            return None
        logger.info("worker %s: %s -> closed", worker_id, record.state.value)
        return self._records.pop(worker_id)

    def apply_pairing(self, events: Iterable[PairingEvent]) -> None:
        """Keep ``paired_peer`` in step with the pairing table's events."""
        for event in events:
            if isinstance(event, PairFormed):
                self._set_peer(event.first, event.second)
                self._set_peer(event.second, event.first)
            elif isinstance(event, PeerLeft):
                self._set_peer(event.left_id, None)
                self._set_peer(event.peer_id, None)

    def listing(self) -> dict[str, Any]:
        workers = {worker_id: record.listing() for worker_id, record in self._records.items()}
        return {"connected_workers_count": len(workers), "workers": workers}

    def snapshot(self) -> dict[str, Any]:
        """Plain, msgpack-able state; ``restore`` rebuilds the registry from it."""
        return {"workers": [record.as_dict() for record in self._records.values()]}

    @classmethod
    def restore(cls, snapshot: Any, max_workers: int = MAX_WORKERS) -> WorkerRegistry:
        """Rebuild from a snapshot (ours, or one the edge built); malformed -> DecodeError."""
        registry = cls(max_workers)
        try:
            records = [_read_record(item) for item in snapshot["workers"]]
        except (KeyError, TypeError, ValueError) as bad:
            raise DecodeError(f"registry snapshot is malformed: {bad!r}") from None
        registry._records = {record.worker_id: record for record in records}
        return registry

    def _apply(
        self, worker_id: str, connection_id: int, event: WorkerEvent, **changes: Any,
    ) -> WorkerRecord:
        record = self._live(worker_id, connection_id)
        if "cert_fingerprint" in changes and changes["cert_fingerprint"] is None:
            del changes["cert_fingerprint"]  # not announced this time: keep the one we have
        state = next_state(worker_id, record.state, event)
        record = self._records[worker_id] = replace(record, state=state, **changes)
        return record

    def _live(self, worker_id: str, connection_id: int) -> WorkerRecord:
        record = self._records.get(worker_id)
        if record is None or record.connection_id != connection_id:
            raise UsageError(f"worker {worker_id} has no live connection {connection_id}",
                             code="stale_connection")
        return record

    def _set_peer(self, worker_id: str, peer_id: str | None) -> None:
        record = self._records.get(worker_id)
        if record is not None:
            self._records[worker_id] = replace(record, paired_peer=peer_id)


# The type each snapshot field must have (it crossed a process boundary).
_RECORD_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "worker_id": (str,), "connection_id": (int,), "observed_ip": (str,),
    "observed_port": (int, type(None)), "connected_since": (int, float), "state": (str,),
    "reported_ip": (str, type(None)), "udp_ip": (str, type(None)),
    "udp_port": (int, type(None)), "cert_fingerprint": (str, type(None)),
    "paired_peer": (str, type(None)),
}


def _read_record(item: dict[str, Any]) -> WorkerRecord:
    fields = {name: item[name] for name in _RECORD_FIELD_TYPES}
    for name, types in _RECORD_FIELD_TYPES.items():
        if not isinstance(fields[name], types) or isinstance(fields[name], bool):
            raise TypeError(f"field {name!r} has the wrong type")
    wire.validate_worker_id(fields["worker_id"])
    return WorkerRecord(**fields | {"state": WorkerState(fields["state"])})


__all__ = [
    "MAX_WORKERS", "WorkerState", "WorkerEvent", "TRANSITIONS", "next_state", "WorkerRecord",
    "listing_entry",
    "WorkerRegistry",
]
