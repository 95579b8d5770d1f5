"""The quic actor's shell around the current ``Tunnel``: what goes in, what comes out, one timer.

It drives the sans-I/O ``Tunnel`` as aioquic's own asyncio shell drives a connection: datagrams in
(``UdpReceived`` from udp, via ``TunnelConnections.receive``), datagrams out (one ``UdpSend`` per
destination per flush, once per event-loop iteration), one timer. The tunnel's events become
``TunnelStatus`` for ``ui`` and ``rendezvous_client``, and UI events.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from actors.actor import ActorContext
from actors.worker.core_driving import batches, clock
from actors.worker.quic_connections import BACKOFF_FIRST, Address, initial_ids
from messages.worker import PeerOffer, TunnelStatus, UdpSend, UiEvent
from protocol.tunnel.connection import Tunnel
from protocol.tunnel.events import (
    AuthFailed,
    ChatAcked,
    ChatReceived,
    EchoReplied,
    PingAcked,
    TunnelDown,
    TunnelUp,
)

log = logging.getLogger(__name__)


class TunnelShell:
    """Mixed into ``QuicActor``, which sets these attributes up in ``on_start``."""

    ctx: ActorContext
    loop: asyncio.AbstractEventLoop
    offer: PeerOffer | None
    tunnel: Tunnel | None
    local_scid: bytes | None
    state: str
    reason: str
    rtt: float
    timer: asyncio.TimerHandle | None
    backoff: float
    flush_due: bool

    if TYPE_CHECKING:
        def on_down(self, reason: str) -> None: ...  # from TunnelConnections
        def save(self) -> None: ...  # from QuicStateFile

    # -- events, datagrams out, timer ----------------------------------------------------------

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
            self.ctx.transport.flush()  # delivered, then remembered: see QuicStateFile.save()
            self.save()
        elif isinstance(event, ChatAcked):
            self.save()
        elif isinstance(event, EchoReplied):
            self.ui({"type": "quic_echo_response", "payload": event.payload.decode(
                "utf-8", "replace"), "rtt_ms": round(event.rtt * 1000, 3)})
        elif isinstance(event, PingAcked):
            self.rtt = event.rtt

    # -- publishing ---------------------------------------------------------------------------

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
