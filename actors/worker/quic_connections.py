"""The quic actor's connections: which ``Tunnel`` is the current one, and opening a new one.

Roles come with the ``PeerOffer``: the client connects once the udp actor reports the path
connected, and again (with backoff) after the tunnel goes down.

Re-establishment after a restart, on either side. A client Initial from the peer whose source
connection id is not the current connection's is a new connection: we answer it as the QUIC
server with a fresh ``Tunnel``, whatever our role (RFC 9000 §5.2.2: a server creates a connection
for an Initial it cannot match). So whoever restarts simply connects:
- a restarted designated client connects as usual; the server takes the new Initial;
- a restarted designated server cannot wait for a peer that believes its tunnel is up (aioquic
  ignores stateless resets, so the peer would only notice at its idle timeout): it connects as
  the QUIC client once, and the peer answers as server. If both connect at once, the designated
  client's connection wins: it ignores the other Initial while its own is being set up.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aioquic.buffer import Buffer
from aioquic.quic.packet import QuicPacketType, pull_quic_header

from actors.worker.core_driving import clock
from messages.errors import ConfigError
from messages.worker import PathStatus, PeerOffer
from protocol.tunnel.chat import Inbox, Outbox
from protocol.tunnel.connection import Tunnel, TunnelState
from protocol.tunnel.quic import MIN_INITIAL_BYTES

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.2  # seconds before the first reconnect; doubles up to BACKOFF_MAX
BACKOFF_MAX = 10.0
CID_LENGTH = 8  # aioquic's default; only long headers are parsed here, which carry lengths
SETTING_UP = (TunnelState.NEW, TunnelState.HANDSHAKE, TunnelState.AUTHENTICATING)
Address = tuple[str, int]


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


class TunnelConnections:
    """Mixed into ``QuicActor``, which sets these attributes up in ``on_start``."""

    loop: asyncio.AbstractEventLoop
    cert_pem: bytes
    key_pem: bytes
    idle_timeout: float
    ping_interval: float
    offer: PeerOffer | None
    path: PathStatus | None
    outbox: Outbox
    inbox: Inbox
    tunnel: Tunnel | None
    tunnel_addr: Address
    peer_scid: bytes | None
    local_scid: bytes | None
    retry: asyncio.TimerHandle | None
    backoff: float
    dropped: int

    if TYPE_CHECKING:  # from TunnelShell
        def publish(self, state: str, reason: str) -> None: ...
        def after_input(self) -> None: ...

    # -- tunnels -----------------------------------------------------------------------------

    def active(self) -> bool:
        return self.tunnel is not None and self.tunnel.state is not TunnelState.DOWN

    def path_connected(self) -> bool:
        return self.path is not None and self.path.state == "connected"

    def connect(self) -> None:
        """Open a tunnel as the QUIC client, unless one is already there."""
        if self.active() or not self.path_connected() or self.offer is None:
            return
        self.cancel_retry()
        now = clock()
        tunnel = self.new_tunnel("client", now)
        if tunnel is not None:
            assert self.path is not None
            self.tunnel_addr = (self.path.host, self.path.port)
            tunnel.connect(self.tunnel_addr, now)
            self.publish("connecting", f"QUIC handshake with {self.offer.peer_id}")
            self.after_input()

    def new_tunnel(self, role: str, now: float) -> Tunnel | None:
        assert self.offer is not None
        self.tunnel, self.peer_scid, self.local_scid = None, None, None
        if not self.offer.peer_fingerprint:
            self.publish("down", "the rendezvous gave no fingerprint for the peer: "
                                 "an unauthenticated tunnel is refused")
            return None
        try:
            self.tunnel = Tunnel(role, self.cert_pem, self.key_pem, self.offer.peer_fingerprint,
                                 now, idle_timeout=self.idle_timeout,
                                 ping_interval=self.ping_interval,
                                 outbox=self.outbox, inbox=self.inbox)
        except ConfigError as exc:
            self.publish("down", f"cannot build the tunnel: {exc.reason}")
        return self.tunnel

    def close_tunnel(self, reason: str) -> None:
        self.cancel_retry()
        if self.tunnel is not None and self.tunnel.state not in (TunnelState.CLOSING,
                                                                 TunnelState.DOWN):
            self.tunnel.close(reason)
            self.after_input()

    def recover(self) -> None:
        """After our own restart: the peer may believe the old tunnel is still up; connect."""
        if self.offer is None or not self.path_connected() or self.active():
            return
        log.info("restarted with a connected path: reconnecting as the QUIC client")
        self.connect()

    def reconnect(self) -> None:
        self.retry = None
        if self.offer is not None and self.offer.quic_role == "client":
            self.connect()

    def cancel_retry(self) -> None:
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None

    # -- datagrams from the peer, and a tunnel gone down ---------------------------------------

    def receive(self, data: bytes, addr: Address) -> None:
        if self.offer is None:
            self.dropped += 1
            return
        now = clock()
        ids = initial_ids(data)
        opens = ids is not None and self.is_new_connection(*ids)
        if opens and not self.take_new_connection(ids[0], addr, now):  # type: ignore[index]
            self.dropped += 1
            return
        if self.tunnel is None:
            self.dropped += 1  # 1-RTT packets of a connection an earlier incarnation had
            return
        self.tunnel.receive_datagram(data, addr, now)
        self.after_input()

    def is_new_connection(self, scid: bytes, dcid: bytes) -> bool:
        """Whether an Initial from the peer opens a connection other than the current one."""
        if self.tunnel is None or not self.active():
            return True
        if scid == self.peer_scid:
            return False
        if self.tunnel.role == "client" and self.peer_scid is None and dcid == self.local_scid:
            self.peer_scid = scid  # the server's first answer to our Initial
            return False
        return True

    def take_new_connection(self, scid: bytes, addr: Address, now: float) -> bool:
        """Answer a peer's new Initial as the QUIC server (see the module docstring)."""
        ours = self.tunnel
        if (ours is not None and ours.role == "client" and ours.state in SETTING_UP
                and self.offer is not None and self.offer.quic_role == "client"):
            return False  # both connected at once: the designated client's connection wins
        self.cancel_retry()
        if self.new_tunnel("server", now) is None:
            return False
        self.peer_scid, self.tunnel_addr = scid, addr
        self.publish("connecting", "the peer opened a new QUIC connection")
        return True

    def on_down(self, reason: str) -> None:
        self.tunnel = None
        self.publish("down", reason)
        if self.offer is not None and self.offer.quic_role == "client" and self.path_connected():
            self.cancel_retry()
            self.retry = self.loop.call_later(self.backoff, self.reconnect)
            self.backoff = min(self.backoff * 2, BACKOFF_MAX)

