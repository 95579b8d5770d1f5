"""What a ``Tunnel`` reports, and the table of its states.

Events are frozen dataclasses; don't subclass them. States move only along ``TRANSITIONS``::

    NEW ──connect / first Initial──▶ HANDSHAKE ──TLS done, server pinned──▶ AUTHENTICATING
     │                                   │                                       │
     │                                   ├──────── close / auth failure ────────┤
     │                                   ▼                                       ▼
     │                                CLOSING ◀──────────── close ──────────── UP
     │                                   │                                       │
     └──── close before connecting ──▶ DOWN ◀─────── connection terminated ──────┘

(HANDSHAKE and AUTHENTICATING may also drop straight to DOWN when the peer closes or the
connection times out.)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from messages.errors import IllegalTransition
from protocol.benchmark.stream import StreamVerdict


class TunnelState(Enum):
    NEW = "new"
    HANDSHAKE = "handshake"
    AUTHENTICATING = "authenticating"
    UP = "up"
    CLOSING = "closing"
    DOWN = "down"


TRANSITIONS: dict[TunnelState, frozenset[TunnelState]] = {
    TunnelState.NEW: frozenset({TunnelState.HANDSHAKE, TunnelState.DOWN}),
    TunnelState.HANDSHAKE: frozenset(
        {TunnelState.AUTHENTICATING, TunnelState.CLOSING, TunnelState.DOWN}
    ),
    TunnelState.AUTHENTICATING: frozenset(
        {TunnelState.UP, TunnelState.CLOSING, TunnelState.DOWN}
    ),
    TunnelState.UP: frozenset({TunnelState.CLOSING, TunnelState.DOWN}),
    TunnelState.CLOSING: frozenset({TunnelState.DOWN}),
    TunnelState.DOWN: frozenset(),
}


def check_transition(old: TunnelState, new: TunnelState) -> None:
    """Raise IllegalTransition unless ``TRANSITIONS`` allows ``old -> new``."""
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"tunnel cannot go from {old.value} to {new.value}")


@dataclass(frozen=True)
class TunnelUp:
    """Both checks passed: the server's pinned certificate and the client's signed proof."""

    peer_fingerprint: str


@dataclass(frozen=True)
class TunnelDown:
    """The QUIC connection is gone (closed, refused, timed out); make a new Tunnel to retry."""

    reason: str


@dataclass(frozen=True)
class AuthFailed:
    """The peer is not who the rendezvous service said, or it refused our proof."""

    reason: str


@dataclass(frozen=True)
class ChatReceived:
    msg_id: int
    text: str


@dataclass(frozen=True)
class ChatAcked:
    """The peer holds every chat of ours up to ``msg_id`` (cumulative)."""

    msg_id: int


@dataclass(frozen=True)
class EchoReplied:
    request_id: int
    payload: bytes
    rtt: float


@dataclass(frozen=True)
class PingAcked:
    """A keepalive PING frame was acknowledged."""

    uid: int
    rtt: float


@dataclass(frozen=True)
class BenchStreamAnswered:
    """Sender side: the receiver counted ``bytes_received`` and hashed them to ``sha256`` in
    ``duration_us`` (its clock); ``elapsed`` is the run on ours, from the first byte written."""

    session_id: int
    bytes_received: int
    duration_us: int
    sha256: bytes
    elapsed: float


@dataclass(frozen=True)
class BenchStreamFailed:
    """Sender side: the run's stream ended without the receiver's answer."""

    session_id: int
    reason: str


@dataclass(frozen=True)
class BenchStreamReceived:
    """Receiver side: a benchmark stream ended; ``verdict`` None when it broke off (``reason``)."""

    stream_id: int
    verdict: StreamVerdict | None
    duration: float
    reason: str


TunnelEvent = (
    TunnelUp | TunnelDown | AuthFailed | ChatReceived | ChatAcked | EchoReplied | PingAcked
    | BenchStreamAnswered | BenchStreamFailed | BenchStreamReceived
)

__all__ = [
    "TRANSITIONS",
    "AuthFailed",
    "BenchStreamAnswered",
    "BenchStreamFailed",
    "BenchStreamReceived",
    "ChatAcked",
    "ChatReceived",
    "EchoReplied",
    "PingAcked",
    "TunnelDown",
    "TunnelEvent",
    "TunnelState",
    "TunnelUp",
    "check_transition",
]
