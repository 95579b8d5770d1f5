"""The quic actor: the authenticated QUIC tunnel (``protocol.tunnel.Tunnel``) over the udp actor.

It drives the sans-I/O ``Tunnel`` as aioquic's own asyncio shell drives a connection: datagrams in
(``UdpReceived`` from udp), datagrams out (one ``UdpSend`` per destination per flush, once per
event-loop iteration), one timer. Roles come with the ``PeerOffer``: the client connects once the
udp actor reports the path connected, and again (with backoff) after the tunnel goes down.

Re-establishment after a restart, on either side. A client Initial from the peer whose source
connection id is not the current connection's is a new connection: we answer it as the QUIC
server with a fresh ``Tunnel``, whatever our role (RFC 9000 §5.2.2: a server creates a connection
for an Initial it cannot match). So whoever restarts simply connects:
- a restarted designated client connects as usual; the server takes the new Initial;
- a restarted designated server cannot wait for a peer that believes its tunnel is up (aioquic
  ignores stateless resets, so the peer would only notice at its idle timeout): it connects as
  the QUIC client once, and the peer answers as server. If both connect at once, the designated
  client's connection wins: it ignores the other Initial while its own is being set up.

Chats live in an ``Outbox``/``Inbox`` saved under ``ctx.rundir`` with the offer and the path, so a
kill -9 of this actor loses no chat and repeats none (``protocol.tunnel_chat``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aioquic.buffer import Buffer
from aioquic.quic.packet import QuicPacketType, pull_quic_header

from actors.actor import Actor
from actors.worker.udp import batches, clock, load_state, save_state, state_file
from messages.errors import ConfigError, DecodeError, UsageError
from messages.worker import (
    ChatSend,
    EchoPeer,
    PathStatus,
    PeerGone,
    PeerOffer,
    StatusRequest,
    TunnelStatus,
    UdpReceived,
    UdpSend,
    UiEvent,
)
from protocol.tunnel import Tunnel, TunnelState
from protocol.tunnel_chat import Inbox, Outbox
from protocol.tunnel_events import (
    AuthFailed,
    ChatAcked,
    ChatReceived,
    EchoReplied,
    PingAcked,
    TunnelDown,
    TunnelUp,
)
from protocol.tunnel_quic import MIN_INITIAL_BYTES

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


class QuicActor(Actor):
    def on_start(self) -> None:
        self.loop = asyncio.get_running_loop()
        cfg = self.ctx.config
        self.cert_pem, self.key_pem = as_bytes(cfg["cert_pem"]), as_bytes(cfg["key_pem"])
        self.idle_timeout = float(cfg.get("quic_idle_timeout", 30.0))
        self.ping_interval = float(cfg.get("quic_ping_interval", 10.0))
        self.file = state_file(self.ctx.rundir, self.ctx.path, "quic")
        self.offer: PeerOffer | None = None
        self.path: PathStatus | None = None
        self.outbox, self.inbox = Outbox(), Inbox()
        self.tunnel: Tunnel | None = None
        self.tunnel_addr: Address = ("", 0)
        self.peer_scid: bytes | None = None  # the peer's source cid on the current connection
        self.local_scid: bytes | None = None  # ours, when we are the QUIC client
        self.state, self.reason, self.rtt = "idle", "", 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.retry: asyncio.TimerHandle | None = None
        self.backoff = BACKOFF_FIRST
        self.flush_due = False
        self.dropped = 0
        if self.restore():
            self.loop.call_soon(self.recover)

    def on_stop(self) -> None:
        if self.tunnel is not None and self.tunnel.state is TunnelState.UP:
            self.tunnel.close("the worker is stopping")
            self.flush()  # the CONNECTION_CLOSE leaves before the process does

    def on_receive(self, msg: Any) -> Any:
        if isinstance(msg, UdpReceived):
            for payload in msg.payloads:
                self.receive(payload, (msg.host, msg.port))
        elif isinstance(msg, PathStatus):
            self.on_path(msg)
        elif isinstance(msg, PeerOffer):
            self.on_offer(msg)
        elif isinstance(msg, PeerGone):
            self.on_peer_gone(msg)
        elif isinstance(msg, ChatSend):
            self.send_chat(msg.text)
        elif isinstance(msg, EchoPeer):
            self.send_echo(msg.payload)
        elif isinstance(msg, StatusRequest):
            return self.status()
        else:
            return super().on_receive(msg)
        return None

    # -- the peer, the path, the user -------------------------------------------------------

    def on_offer(self, offer: PeerOffer) -> None:
        old = self.offer
        if old is not None and (old.peer_id, old.peer_fingerprint) != (
                offer.peer_id, offer.peer_fingerprint):
            self.close_tunnel("the rendezvous paired us with another peer")
            self.path = None
        if old is not None and old.peer_id != offer.peer_id:
            self.outbox, self.inbox = Outbox(), Inbox()  # chats were for the old peer
        self.offer = offer
        self.save()
        if self.path is not None and self.path.peer_id == offer.peer_id:
            self.on_path(self.path)  # udp told us about the path before the offer reached us

    def on_path(self, path: PathStatus) -> None:
        if self.offer is None:
            self.path = path
            return
        if path.peer_id != self.offer.peer_id:
            return
        self.path = path
        self.save()
        if path.state == "connected":
            if self.active() and self.tunnel_addr != (path.host, path.port):
                self.close_tunnel("the path to the peer moved")
            if self.offer.quic_role == "client":
                self.connect()
            elif not self.active():
                self.publish("connecting", "waiting for the peer's QUIC handshake")
        elif path.state in ("failed", "closed"):
            self.close_tunnel(f"path {path.state}: {path.reason}")

    def on_peer_gone(self, gone: PeerGone) -> None:
        if self.offer is not None and gone.peer_id == self.offer.peer_id:
            self.close_tunnel(f"peer left: {gone.reason}")
            self.offer = self.path = None
            self.save()

    def send_chat(self, text: str) -> None:
        """Queued in the outbox even while down; saved before it can reach the wire."""
        try:
            if self.tunnel is not None:
                self.tunnel.send_chat(text)
            else:
                self.outbox.add(text)
        except UsageError as exc:
            self.ui({"type": "error", "message": f"QUIC chat not sent: {exc.reason}"})
            return
        self.save()
        self.after_input()

    def send_echo(self, payload: str) -> None:
        if self.tunnel is None or self.tunnel.state is not TunnelState.UP:
            self.ui({"type": "quic_echo_response", "payload": payload,
                     "error": "the QUIC tunnel is not up"})
            return
        try:
            self.tunnel.send_echo(payload.encode("utf-8", "surrogatepass"))
        except UsageError as exc:
            self.ui({"type": "quic_echo_response", "payload": payload, "error": exc.reason})
        self.after_input()

    def status(self) -> dict[str, Any]:
        tunnel = self.tunnel
        return {"state": self.state, "reason": self.reason,
                "peer_id": self.offer.peer_id if self.offer else "",
                "role": self.offer.quic_role if self.offer else "",
                "tunnel_role": tunnel.role if tunnel else "",
                "tunnel_state": tunnel.state.value if tunnel else "",
                "rtt_ms": round(self.rtt * 1000, 3), "pending_chats": len(self.outbox.pending),
                "dropped": self.dropped}

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

    # -- datagrams, events, timer --------------------------------------------------------------

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

    def after_input(self) -> None:
        """Drain events now; send and re-arm the timer once this loop iteration is done."""
        self.drain()
        if not self.flush_due:
            self.flush_due = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_due = False
        tunnel = self.tunnel
        if tunnel is not None:
            by_addr: dict[Address, list[bytes]] = {}
            for data, addr in tunnel.datagrams_to_send(clock()):
                by_addr.setdefault((addr[0], addr[1]), []).append(data)
                if tunnel.role == "client" and self.local_scid is None:
                    ids = initial_ids(data)
                    self.local_scid = ids[0] if ids else None
            udp = self.ctx.ref("udp")
            for (host, port), payloads in by_addr.items():
                for batch in batches(payloads):
                    udp.tell(UdpSend(host, port, batch))
        self.drain()
        self.arm_timer()

    def arm_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        when = self.tunnel.get_timer() if self.tunnel is not None else None
        if when is not None:
            self.timer = self.loop.call_later(max(0.0, when - clock()), self.on_timer)

    def on_timer(self) -> None:
        self.timer = None
        if self.tunnel is not None:
            self.tunnel.handle_timer(clock())
        self.after_input()

    def drain(self) -> None:
        tunnel = self.tunnel
        while tunnel is not None and (event := tunnel.next_event()) is not None:
            self.on_event(event)

    def on_event(self, event: Any) -> None:
        peer = self.offer.peer_id if self.offer else ""
        if isinstance(event, TunnelUp):
            self.backoff = BACKOFF_FIRST
            fp = event.peer_fingerprint[:16]
            self.publish("up", f"tunnel up, peer {peer} authenticated (fingerprint {fp}...)")
        elif isinstance(event, AuthFailed):
            self.ui({"type": "quic_status_update", "state": "auth_failed", "peer_id": peer,
                     "message": event.reason})
        elif isinstance(event, TunnelDown):
            self.on_down(event.reason)
        elif isinstance(event, ChatReceived):
            self.ui({"type": "quic_message_received", "from_peer_id": peer, "content": event.text})
            self.ctx.transport.flush()  # delivered, then remembered: see save()
            self.save()
        elif isinstance(event, ChatAcked):
            self.save()
        elif isinstance(event, EchoReplied):
            self.ui({"type": "quic_echo_response", "payload": event.payload.decode(
                "utf-8", "replace"), "rtt_ms": round(event.rtt * 1000, 3)})
        elif isinstance(event, PingAcked):
            self.rtt = event.rtt

    def on_down(self, reason: str) -> None:
        self.tunnel = None
        self.publish("down", reason)
        if self.offer is not None and self.offer.quic_role == "client" and self.path_connected():
            self.cancel_retry()
            self.retry = self.loop.call_later(self.backoff, self.reconnect)
            self.backoff = min(self.backoff * 2, BACKOFF_MAX)

    # -- publishing and persistence ----------------------------------------------------------

    def publish(self, state: str, reason: str) -> None:
        self.state, self.reason = state, reason
        peer = self.offer.peer_id if self.offer else ""
        log.info("tunnel to %s: %s (%s)", peer, state, reason)
        status = TunnelStatus(state, peer, reason)
        self.ctx.ref("ui").tell(status)
        self.ctx.ref("rendezvous_client").tell(status)
        self.ui({"type": "quic_status_update", "state": state, "peer_id": peer, "message": reason})

    def ui(self, payload: dict[str, Any]) -> None:
        self.ctx.ref("ui").tell(UiEvent(payload))

    def save(self) -> None:
        """Offer, path, outbox and inbox, atomically. Called after each chat is queued (before it
        can reach the wire), after each chat is handed to the UI and after each ack."""
        save_state(self.file, {
            "offer": plain(self.offer), "path": plain(self.path),
            "outbox": self.outbox.to_plain(), "inbox": self.inbox.to_plain()})

    def restore(self) -> bool:
        """What an earlier incarnation saved; True if it had a peer."""
        saved = load_state(self.file)
        if not isinstance(saved, dict):
            return False
        try:
            self.outbox = Outbox.from_plain(saved.get("outbox"))
            self.inbox = Inbox.from_plain(saved.get("inbox"))
            self.offer = PeerOffer(**saved["offer"]) if saved.get("offer") else None
            self.path = PathStatus(**saved["path"]) if saved.get("path") else None
        except (DecodeError, TypeError, KeyError) as exc:
            log.warning("unusable saved tunnel state ignored: %s", exc)
            return False
        log.info("restored: peer %s, %d chats pending", self.offer and self.offer.peer_id,
                 len(self.outbox.pending))
        return self.offer is not None


def plain(msg: Any) -> dict[str, Any] | None:
    return None if msg is None else {f: getattr(msg, f) for f in msg.__dataclass_fields__}


def as_bytes(pem: str | bytes) -> bytes:
    return pem.encode() if isinstance(pem, str) else pem
