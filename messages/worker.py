"""Messages between the actors of one worker (``worker/udp``, ``worker/stun``,
``worker/rendezvous_client``, ``worker/quic``, ``worker/ui``).

Data plane: ``UdpSend`` and ``UdpReceived`` carry several datagrams each, so a burst crosses a
mailbox as one message. Addresses travel as ``host, port``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from messages.codec import message
from messages.tags import Tag


@message(Tag.UDP_SEND)
@dataclass(frozen=True, slots=True)
class UdpSend:
    """Send each payload to host:port from the worker's one UDP socket (any actor -> udp)."""

    host: str
    port: int
    payloads: list[bytes]


@message(Tag.UDP_RECEIVED)
@dataclass(frozen=True, slots=True)
class UdpReceived:
    """Datagrams that arrived from host:port, in order (udp -> quic: QUIC; udp -> stun: STUN)."""

    host: str
    port: int
    payloads: list[bytes]


@message(Tag.PEER_OFFER)
@dataclass(frozen=True, slots=True)
class PeerOffer:
    """The rendezvous paired us (rendezvous_client -> udp, quic). ``punch_token`` is hex."""

    peer_id: str
    host: str
    port: int
    quic_role: str  # "client" or "server"
    peer_fingerprint: str | None
    punch_token: str


@message(Tag.PEER_GONE)
@dataclass(frozen=True, slots=True)
class PeerGone:
    """The peer left the rendezvous or the path died (rendezvous_client -> udp, quic)."""

    peer_id: str
    reason: str


@message(Tag.PATH_STATUS)
@dataclass(frozen=True, slots=True)
class PathStatus:
    """The punched path (udp -> quic, ui, rendezvous_client).

    ``state``: punching, connected, failed, lost, closed. ``host``/``port`` are the peer's
    address as seen on the path (a NAT may have rewritten the offered one)."""

    state: str
    peer_id: str
    host: str
    port: int
    rtt: float
    reason: str


@message(Tag.STUN_RESULT)
@dataclass(frozen=True, slots=True)
class StunResult:
    """The public mapping of the worker's UDP socket (stun -> rendezvous_client, ui)."""

    ok: bool
    host: str
    port: int
    nat_type: str
    reason: str


@message(Tag.REDO_STUN)
@dataclass(frozen=True, slots=True)
class RedoStun:
    """Discover the mapping again now (ui -> stun)."""


@message(Tag.UI_EVENT)
@dataclass(frozen=True, slots=True)
class UiEvent:
    """A JSON object to broadcast to every UI client, in the original's shapes (any -> ui)."""

    payload: dict[str, Any]


@message(Tag.CHAT_SEND)
@dataclass(frozen=True, slots=True)
class ChatSend:
    """Chat to the peer (ui -> udp for plain UDP, ui -> quic for the tunnel). ``ref`` names
    it in the UI's ``chat_state`` events (queued, sent, delivered, failed); "" for none."""

    text: str
    ref: str = ""


@message(Tag.PING_PEER)
@dataclass(frozen=True, slots=True)
class PingPeer:
    """A P2P UDP ping; the result goes to the UI as ``p2p_ping_result`` (ui -> udp)."""


@message(Tag.ECHO_PEER)
@dataclass(frozen=True, slots=True)
class EchoPeer:
    """A QUIC echo; the result goes to the UI as ``quic_echo_response`` (ui -> quic)."""

    payload: str


@message(Tag.STATUS_REQUEST)
@dataclass(frozen=True, slots=True)
class StatusRequest:
    """Ask an actor for its status: a JSON-ready dict (ui -> any)."""


@message(Tag.TUNNEL_STATUS)
@dataclass(frozen=True, slots=True)
class TunnelStatus:
    """The QUIC tunnel (quic -> ui, rendezvous_client). ``state``: down, connecting, up."""

    state: str
    peer_id: str
    reason: str
