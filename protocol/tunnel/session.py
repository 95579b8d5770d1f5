"""The tunnel to the paired worker across its connections, sans-I/O: which ``Tunnel`` is the
current one, and the rules for opening the next.

The owner feeds it the peer (``offer``), the punched path (``path_changed``), datagrams and
``now``, and drives it like a ``Tunnel`` (``datagrams_to_send``, ``get_timer``, ``handle_timer``,
``next_event``). Its events: ``SessionChanged`` on every state change, and the current tunnel's
``AuthFailed``, ``ChatReceived``, ``ChatAcked`` and ``EchoReplied``.

Roles come with the offer: the client connects once the path is connected, and again (with
backoff, on the session's timer) after the tunnel goes down.

Re-establishment after a restart, on either side. A client Initial from the peer whose source
connection id is not the current connection's is a new connection: we answer it as the QUIC
server with a fresh ``Tunnel``, whatever our role (RFC 9000 §5.2.2: a server creates a connection
for an Initial it cannot match). So whoever restarts simply connects (``recover``):
- a restarted designated client connects as usual; the server takes the new Initial;
- a restarted designated server cannot wait for a peer that believes its tunnel is up (aioquic
  ignores stateless resets, so the peer would only notice at its idle timeout): it connects as
  the QUIC client once, and the peer answers as server. If both connect at once, the designated
  client's connection wins: it ignores the other Initial while its own is being set up.

States move only along ``TRANSITIONS``::

    IDLE ──connect / peer's Initial / waiting as server──▶ CONNECTING ──TunnelUp──▶ UP
     │                                                    ▲   │  ▲                 │
     │                                                    │   │  └─peer's new Initial┤
     │                                                    │   ▼                     │
     └──────── no usable tunnel ────────────────────────▶ DOWN ◀────TunnelDown──────┘

(CONNECTING and DOWN may repeat with a new reason; nothing returns to IDLE.)
"""

from __future__ import annotations

import collections
import enum
import logging
from dataclasses import dataclass
from typing import Literal

from aioquic.buffer import Buffer
from aioquic.quic.packet import QuicPacketType, pull_quic_header

from messages.errors import ConfigError, IllegalTransition, UsageError
from protocol.stun import Address
from protocol.tunnel.chat import Inbox, Outbox
from protocol.tunnel.connection import Tunnel
from protocol.tunnel.events import (
    AuthFailed,
    BenchStreamAnswered,
    BenchStreamFailed,
    BenchStreamReceived,
    ChatAcked,
    ChatReceived,
    EchoReplied,
    PingAcked,
    TunnelDown,
    TunnelState,
    TunnelUp,
)
from protocol.tunnel.quic import MIN_INITIAL_BYTES
from protocol.udp.peer_path import PeerPathState

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.2  # seconds before the first reconnect; doubles up to BACKOFF_MAX
BACKOFF_MAX = 10.0
CID_LENGTH = 8  # aioquic's default; only long headers are parsed here, which carry lengths
SETTING_UP = (TunnelState.NEW, TunnelState.HANDSHAKE, TunnelState.AUTHENTICATING)

Role = Literal["client", "server"]


class SessionState(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"


TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    SessionState.IDLE: frozenset({SessionState.CONNECTING, SessionState.DOWN}),
    SessionState.CONNECTING: frozenset(
        {SessionState.CONNECTING, SessionState.UP, SessionState.DOWN}),
    SessionState.UP: frozenset({SessionState.CONNECTING, SessionState.DOWN}),
    SessionState.DOWN: frozenset({SessionState.CONNECTING, SessionState.DOWN}),
}


@dataclass(frozen=True)
class Peer:
    """The paired worker, as the rendezvous offered it."""

    peer_id: str
    role: Role  # ours, for the tunnel to this peer
    fingerprint: str | None


@dataclass(frozen=True)
class SessionChanged:
    state: SessionState
    reason: str


SessionEvent = (SessionChanged | AuthFailed | ChatReceived | ChatAcked | EchoReplied
                | BenchStreamAnswered | BenchStreamFailed | BenchStreamReceived)


def initial_ids(data: bytes) -> tuple[bytes, bytes] | None:
    """(source, destination) connection ids of a datagram that opens with a padded Initial."""
    if len(data) < MIN_INITIAL_BYTES or not data[0] & 0x80:
        return None
    try:
        header = pull_quic_header(Buffer(data=data), CID_LENGTH)
    except ValueError:
        return None
    if header.packet_type != QuicPacketType.INITIAL:
        return None
    return header.source_cid, header.destination_cid


class TunnelSession:
    """The tunnel to one peer at a time; ``dropped`` counts datagrams no connection could take."""

    def __init__(self, cert_pem: bytes, key_pem: bytes, *, idle_timeout: float = 30.0,
                 ping_interval: float = 10.0) -> None:
        self.cert_pem, self.key_pem = cert_pem, key_pem
        self.idle_timeout, self.ping_interval = idle_timeout, ping_interval
        self.peer: Peer | None = None
        self.path: Address | None = None  # the punched path, while it is connected
        self.outbox, self.inbox = Outbox(), Inbox()
        self.tunnel: Tunnel | None = None
        self.tunnel_addr: Address = ("", 0)
        self.peer_scid: bytes | None = None  # the peer's source cid on the current connection
        self.local_scid: bytes | None = None  # ours, when we are the QUIC client
        self.state, self.reason, self.rtt = SessionState.IDLE, "", 0.0
        self.retry_at: float | None = None
        self.backoff = BACKOFF_FIRST
        self.dropped = 0
        self._events: collections.deque[SessionEvent] = collections.deque()

    # -- the peer and the path ---------------------------------------------------------------

    def restore(self, peer: Peer | None, path: Address | None, outbox: Outbox,
                inbox: Inbox) -> None:
        """What an earlier incarnation of the owner saved; ``recover`` then reconnects."""
        self.peer, self.path, self.outbox, self.inbox = peer, path, outbox, inbox

    def recover(self, now: float) -> None:
        """After the owner's restart: the peer may believe the old tunnel is still up."""
        if self.peer is not None and self.path is not None and not self.active():
            log.info("restarted with a connected path: reconnecting as the QUIC client")
            self.connect(now)

    def offer(self, peer: Peer, now: float) -> bool:
        """Pair with ``peer``; True if it replaces another peer, whose path is then void."""
        old, self.peer = self.peer, peer
        replaced = old is not None and (old.peer_id, old.fingerprint) != (peer.peer_id,
                                                                          peer.fingerprint)
        if replaced:
            self.close("the rendezvous paired us with another peer", now)
            self.path = None
        if old is not None and old.peer_id != peer.peer_id:
            self.outbox, self.inbox = Outbox(), Inbox()  # chats were for the old peer
        return replaced

    def path_changed(self, state: PeerPathState, addr: Address, reason: str, now: float) -> None:
        if state is not PeerPathState.CONNECTED:
            self.path = None
            if state in (PeerPathState.FAILED, PeerPathState.CLOSED):
                self.close(f"path {state.value}: {reason}", now)
            return
        if self.active() and self.tunnel_addr != addr:
            self.close("the path to the peer moved", now)
        self.path = addr
        if self.peer is not None and self.peer.role == "client":
            self.connect(now)
        elif not self.active():
            self._transition(SessionState.CONNECTING, "waiting for the peer's QUIC handshake")

    def leave(self, reason: str, now: float) -> None:
        """The peer is gone: close, and forget it."""
        self.close(reason, now)
        self.peer = self.path = None

    # -- tunnels -----------------------------------------------------------------------------

    def active(self) -> bool:
        return self.tunnel is not None and self.tunnel.state is not TunnelState.DOWN

    def connect(self, now: float) -> None:
        """Open a tunnel as the QUIC client, unless one is already there."""
        if self.active() or self.path is None or self.peer is None:
            return
        self.retry_at = None
        tunnel = self._new_tunnel("client", now)
        if tunnel is not None:
            self.tunnel_addr = self.path
            tunnel.connect(self.tunnel_addr, now)
            self._transition(SessionState.CONNECTING, f"QUIC handshake with {self.peer.peer_id}")
            self._pump(now)

    def close(self, reason: str, now: float) -> None:
        self.retry_at = None
        if self.tunnel is not None and self.tunnel.state not in (TunnelState.CLOSING,
                                                                 TunnelState.DOWN):
            self.tunnel.close(reason)
            self._pump(now)

    def send_chat(self, text: str, now: float) -> None:
        """Queued in the outbox even while down (``UsageError`` if it cannot be sent at all)."""
        if self.tunnel is not None:
            self.tunnel.send_chat(text)
            self._pump(now)
        else:
            self.outbox.add(text)

    def send_echo(self, payload: bytes, now: float) -> None:
        if self.tunnel is None or self.tunnel.state is not TunnelState.UP:
            raise UsageError("the QUIC tunnel is not up")
        self.tunnel.send_echo(payload)
        self._pump(now)

    def _new_tunnel(self, role: Role, now: float) -> Tunnel | None:
        assert self.peer is not None
        if self.tunnel is not None:  # replaced: its benchmark runs end here, and say why
            self.tunnel.abandon("the peer opened a new QUIC connection")
            self._pump(now)
        self.tunnel, self.peer_scid, self.local_scid = None, None, None
        if not self.peer.fingerprint:
            self._transition(SessionState.DOWN, "the rendezvous gave no fingerprint for the "
                                                "peer: an unauthenticated tunnel is refused")
            return None
        try:
            self.tunnel = Tunnel(role, self.cert_pem, self.key_pem, self.peer.fingerprint, now,
                                 idle_timeout=self.idle_timeout, ping_interval=self.ping_interval,
                                 outbox=self.outbox, inbox=self.inbox)
        except ConfigError as exc:
            self._transition(SessionState.DOWN, f"cannot build the tunnel: {exc.reason}")
        return self.tunnel

    # -- datagrams, timer, events ------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        if self.peer is None:
            self.dropped += 1
            return
        ids = initial_ids(data)
        if ids is not None and self._is_new_connection(*ids) and not self._take_new_connection(
                ids[0], addr, now):
            self.dropped += 1
            return
        if self.tunnel is None:
            self.dropped += 1  # 1-RTT packets of a connection an earlier incarnation had
            return
        self.tunnel.receive_datagram(data, addr, now)
        self._pump(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        tunnel = self.tunnel
        if tunnel is None:
            return []
        datagrams = [(data, (addr[0], addr[1])) for data, addr in tunnel.datagrams_to_send(now)]
        if tunnel.role == "client" and self.local_scid is None and datagrams:
            ids = initial_ids(datagrams[0][0])
            self.local_scid = ids[0] if ids else None
        self._pump(now)
        return datagrams

    def get_timer(self) -> float | None:
        timers = (self.retry_at, self.tunnel.get_timer() if self.tunnel is not None else None)
        return min((t for t in timers if t is not None), default=None)

    def handle_timer(self, now: float) -> None:
        if self.retry_at is not None and now >= self.retry_at:
            self.retry_at = None
            if self.peer is not None and self.peer.role == "client":
                self.connect(now)
        if self.tunnel is not None:
            self.tunnel.handle_timer(now)
            self._pump(now)

    def next_event(self) -> SessionEvent | None:
        return self._events.popleft() if self._events else None

    def _is_new_connection(self, scid: bytes, dcid: bytes) -> bool:
        """Whether an Initial from the peer opens a connection other than the current one."""
        if self.tunnel is None or not self.active():
            return True
        if scid == self.peer_scid:
            return False
        if self.tunnel.role == "client" and self.peer_scid is None and dcid == self.local_scid:
            self.peer_scid = scid  # the server's first answer to our Initial
            return False
        return True

    def _take_new_connection(self, scid: bytes, addr: Address, now: float) -> bool:
        """Answer a peer's new Initial as the QUIC server (see the module docstring)."""
        ours = self.tunnel
        if (ours is not None and ours.role == "client" and ours.state in SETTING_UP
                and self.peer is not None and self.peer.role == "client"):
            return False  # both connected at once: the designated client's connection wins
        self.retry_at = None
        if self._new_tunnel("server", now) is None:
            return False
        self.peer_scid, self.tunnel_addr = scid, addr
        self._transition(SessionState.CONNECTING, "the peer opened a new QUIC connection")
        return True

    def _pump(self, now: float) -> None:
        """The current tunnel's events: the session's own state follows them at once."""
        while self.tunnel is not None and (event := self.tunnel.next_event()) is not None:
            if isinstance(event, TunnelUp):
                self.backoff = BACKOFF_FIRST
                peer = self.peer.peer_id if self.peer else ""
                self._transition(SessionState.UP, f"tunnel up, peer {peer} authenticated "
                                                  f"(fingerprint {event.peer_fingerprint[:16]}...)")
            elif isinstance(event, TunnelDown):
                self._on_down(event.reason, now)
            elif isinstance(event, PingAcked):
                self.rtt = event.rtt
            else:
                self._events.append(event)

    def _on_down(self, reason: str, now: float) -> None:
        self.tunnel = None
        self._transition(SessionState.DOWN, reason)
        if self.peer is not None and self.peer.role == "client" and self.path is not None:
            self.retry_at = now + self.backoff
            self.backoff = min(self.backoff * 2, BACKOFF_MAX)

    def _transition(self, new: SessionState, reason: str) -> None:
        """The one place the state changes (``TRANSITIONS``)."""
        if new not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"tunnel session cannot go from {self.state.value} "
                                    f"to {new.value}")
        peer = self.peer.peer_id if self.peer else ""
        log.info("tunnel to %s: %s -> %s (%s)", peer, self.state.value, new.value, reason)
        self.state, self.reason = new, reason
        self._events.append(SessionChanged(new, reason))
