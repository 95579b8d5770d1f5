"""The quic actor: the authenticated QUIC tunnel (``protocol.tunnel``) over the udp actor.

This module holds the actor's messages: offers and departures from rendezvous_client, path
changes from udp, chats and echoes from the UI. Its parts: ``TunnelConnections``
(``quic_connections``: roles, and re-establishment after either side restarts), ``TunnelShell``
(``quic_tunnel_shell``: datagrams in and out, events, one timer) and ``QuicStateFile``
(``quic_state``: the offer, the path and the chats, kept across a kill -9 of this actor).
"""

from __future__ import annotations

import asyncio
from typing import Any

from actors.actor import Actor
from actors.worker.quic_connections import (
    BACKOFF_FIRST,
    BACKOFF_MAX,
    CID_LENGTH,
    SETTING_UP,
    Address,
    TunnelConnections,
    initial_ids,
)
from actors.worker.quic_state import QuicStateFile, plain
from actors.worker.quic_tunnel_shell import TunnelShell
from actors.worker.state_files import state_file
from messages.errors import UsageError
from messages.worker import (
    ChatSend,
    EchoPeer,
    PathStatus,
    PeerGone,
    PeerOffer,
    StatusRequest,
    UdpReceived,
)
from protocol.tunnel.chat import Inbox, Outbox
from protocol.tunnel.connection import Tunnel, TunnelState

# Names that moved to their own modules, still importable from here.
__all__ = ["BACKOFF_FIRST", "BACKOFF_MAX", "CID_LENGTH", "SETTING_UP", "Address", "QuicActor",
           "as_bytes", "initial_ids", "plain"]


class QuicActor(TunnelConnections, TunnelShell, QuicStateFile, Actor):
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

def as_bytes(pem: str | bytes) -> bytes:
    return pem.encode() if isinstance(pem, str) else pem
