"""What ``PairingTable`` is fed and what it reports, as frozen dataclasses; don't subclass them.

A ``Candidate`` is what a worker's offer tells its peer; a ``Pair`` is two workers and the
``punch_token`` that ties their offers together. Every event carries the JSON messages to send
(``Outbound``), built with ``protocol.rendezvous.wire``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

# ``reason`` of a ``peer_disconnected``: why the peer went away.
REASON_DISCONNECTED = "disconnected"  # its WebSocket closed
REASON_DEREGISTERED = "deregistered"  # it sent explicit_deregister
REASON_REPLACED = "replaced"  # a new connection came with the same worker id
REASON_REPAIRED = "repaired"  # a connect_request moved it to another pair


@dataclass(frozen=True)
class Candidate:
    """What an offer tells the peer about a worker."""

    worker_id: str
    udp_ip: str
    udp_port: int
    cert_fingerprint: str | None = None


@dataclass(frozen=True)
class Pair:
    first: str
    second: str
    punch_token: str

    def peer_of(self, worker_id: str) -> str:
        return self.second if worker_id == self.first else self.first


@dataclass(frozen=True)
class Outbound:
    """One JSON message for the worker ``worker_id``."""

    worker_id: str
    message: dict[str, Any]


@dataclass(frozen=True)
class PairFormed:
    first: str
    second: str
    punch_token: str
    offers: tuple[Outbound, Outbound]


@dataclass(frozen=True)
class PeerLeft:
    left_id: str
    peer_id: str
    reason: str
    notice: Outbound


@dataclass(frozen=True)
class PeerMoved:
    moved_id: str
    peer_id: str
    offer: Outbound


@dataclass(frozen=True)
class RequestRefused:
    worker_id: str
    code: str
    reason: str
    reply: Outbound


PairingEvent: TypeAlias = PairFormed | PeerLeft | PeerMoved | RequestRefused

__all__ = [
    "REASON_DISCONNECTED", "REASON_DEREGISTERED", "REASON_REPLACED", "REASON_REPAIRED",
    "Candidate", "Pair", "Outbound", "PairFormed", "PeerLeft", "PeerMoved", "RequestRefused",
    "PairingEvent",
]
