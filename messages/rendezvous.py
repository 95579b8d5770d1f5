"""Messages between the rendezvous service's actors (edge, registry, pairing, stun).

The edge names every WebSocket with a ``connection_id`` that only grows, across restarts of the
edge too, so a message about a connection that was replaced or closed cannot touch its
successor. Flow: edge -> registry (what a worker said), registry -> pairing (who may be paired),
registry and pairing -> edge (JSON to send, records to keep). Bulk state travels in pages, as a
mailbox datagram holds at most 64 KiB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from messages.codec import message
from messages.tags import Tag

# Sessions, records or pairing entries per page: ~300 bytes each stays well under 64 KiB.
PAGE_SIZE = 100


# --- edge -> registry ---------------------------------------------------------------------------
@message(Tag.WORKER_CONNECTED)
@dataclass(frozen=True, slots=True)
class WorkerConnected:
    worker_id: str
    connection_id: int
    observed_ip: str
    observed_port: int | None
    connected_since: float


@message(Tag.PUBLIC_IP_REPORTED)
@dataclass(frozen=True, slots=True)
class PublicIpReported:
    worker_id: str
    connection_id: int
    ip: str
    cert_fingerprint: str | None


@message(Tag.ENDPOINT_REPORTED)
@dataclass(frozen=True, slots=True)
class EndpointReported:
    worker_id: str
    connection_id: int
    udp_ip: str
    udp_port: int
    cert_fingerprint: str | None


@message(Tag.DEREGISTER_REQUESTED)
@dataclass(frozen=True, slots=True)
class DeregisterRequested:
    worker_id: str
    connection_id: int


@message(Tag.PEER_REQUESTED)
@dataclass(frozen=True, slots=True)
class PeerRequested:
    """``connect_request``: pair the worker with the named peer."""

    worker_id: str
    connection_id: int
    peer_worker_id: str


@message(Tag.WORKER_DISCONNECTED)
@dataclass(frozen=True, slots=True)
class WorkerDisconnected:
    worker_id: str
    connection_id: int


@message(Tag.EDGE_STARTED)
@dataclass(frozen=True, slots=True)
class EdgeStarted:
    """A new edge incarnation: every connection numbered below ``first_connection_id`` died
    with its predecessor."""

    first_connection_id: int


# --- registry and pairing -> edge ---------------------------------------------------------------
@message(Tag.WORKER_UPDATE)
@dataclass(frozen=True, slots=True)
class WorkerUpdate:
    """The registry's record of a connection (kept by the edge to hand back after a restart of
    the registry) and/or a JSON message for the worker."""

    worker_id: str
    connection_id: int
    record: dict[str, Any] | None
    reply: dict[str, Any] | None


@message(Tag.CLOSE_WORKER)
@dataclass(frozen=True, slots=True)
class CloseWorker:
    worker_id: str
    connection_id: int
    code: int
    reason: str


@message(Tag.DELIVER)
@dataclass(frozen=True, slots=True)
class Deliver:
    """A JSON message for a worker from the pairing actor (an offer, ``peer_disconnected``, an
    error); the edge remembers the offers it relayed, to hand the pairs back after a restart."""

    worker_id: str
    connection_id: int
    payload: dict[str, Any]


# --- registry -> pairing ------------------------------------------------------------------------
@message(Tag.WORKER_READY)
@dataclass(frozen=True, slots=True)
class WorkerReady:
    worker_id: str
    connection_id: int
    udp_ip: str
    udp_port: int
    cert_fingerprint: str | None


@message(Tag.WORKER_GONE)
@dataclass(frozen=True, slots=True)
class WorkerGone:
    worker_id: str
    connection_id: int
    reason: str


@message(Tag.PAIR_REQUEST)
@dataclass(frozen=True, slots=True)
class PairRequest:
    worker_id: str
    connection_id: int
    peer_worker_id: str


# --- asks ---------------------------------------------------------------------------------------
@message(Tag.LEDGER_REQUEST)
@dataclass(frozen=True, slots=True)
class LedgerRequest:
    """Ask the edge for its live sessions: ``{"snapshot_id": int, "sessions": [...], "more":
    bool, "next_connection_id": int}``. ``snapshot_id`` 0 takes a new snapshot; the next pages
    name the one returned, so a session that comes or goes meanwhile moves no page boundary."""

    snapshot_id: int
    offset: int
    limit: int = PAGE_SIZE


@message(Tag.STUN_STATS_REQUEST)
@dataclass(frozen=True, slots=True)
class StunStatsRequest:
    """Ask the STUN actor for its counters: answered, malformed, ignored, failed."""
