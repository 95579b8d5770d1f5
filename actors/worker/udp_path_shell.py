"""The udp actor's side of the punched path: what it does with a ``PeerPath``.

Offers, chats and pings from the other actors, and our own frames from the socket, go into the
path's cores; what they have to send goes out of the socket, their events go to ``ui``, and one
timer wakes them. Every change of the path is saved under ``ctx.rundir`` (so a restart resumes
it) and told to ``quic``, ``ui`` and ``rendezvous_client``.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from actors.actor import ActorContext
from actors.worker.core_driving import clock
from actors.worker.state_files import remove_state, save_state
from actors.worker.udp_path import PeerPath
from messages.errors import DecodeError, UsageError
from messages.worker import PeerGone, PeerOffer, UiEvent
from protocol.stun import Address
from protocol.udp import (
    Chat,
    decode_frame,
    encode_frame,
    encode_legacy_chat,
    encode_legacy_punch,
)
from protocol.udp.holepunch import PunchFailed, PunchSucceeded
from protocol.udp.path import PathLost, PathRestored, PingResult


class PathShell:
    """Mixed into ``UdpActor``, which sets these attributes up before any message or datagram."""

    ctx: ActorContext
    loop: asyncio.AbstractEventLoop
    transport: asyncio.DatagramTransport
    worker_id: str
    counts: collections.Counter[str]
    timer: asyncio.TimerHandle | None
    chat_id: int
    path: PeerPath
    file: str

    # -- what the other actors ask of the path -----------------------------------------------

    def on_offer(self, offer: PeerOffer) -> None:
        if offer == self.path.offer and self.path.state in ("punching", "connected"):
            self.publish()  # the rendezvous repeated itself: nothing to redo
            return
        self.path.start(offer, self.worker_id, clock())
        if self.path.punch is None and self.path.state == "punching":
            self.send_legacy_punches(offer)
        self.changed()
        self.service(clock())

    def on_peer_gone(self, gone: PeerGone) -> None:
        if self.path.offer is None or gone.peer_id != self.path.offer.peer_id:
            return
        self.path.close(f"peer left: {gone.reason}")
        self.changed()
        self.arm_timer()
        self.path.offer = None
        remove_state(self.file)

    def send_chat(self, text: str) -> None:
        offer, now = self.path.offer, clock()
        if offer is None or self.path.state != "connected":
            self.ui({"type": "error", "message": "no P2P path to a peer: chat not sent"})
        elif self.path.token is None:  # a peer of the original system: its JSON chat
            self.transport.sendto(encode_legacy_chat(self.worker_id, text), self.path.peer_addr)
        else:
            self.chat_id = self.chat_id % 0xFFFFFFFF + 1
            try:
                frame = encode_frame(Chat(self.path.token, self.chat_id, text))
            except UsageError as exc:
                self.ui({"type": "error", "message": f"chat not sent: {exc.reason}"})
                return
            self.transport.sendto(frame, self.path.peer_addr)
        self.service(now)

    def send_ping(self) -> None:
        if self.path.pinger is None:
            self.ui({"type": "p2p_ping_result", "error": "no P2P path to a peer"})
            return
        try:
            self.path.pinger.send_ping(clock())
        except UsageError as exc:
            self.ui({"type": "p2p_ping_result", "error": exc.reason})
        self.service(clock())

    # -- our frames, and the original system's punches ---------------------------------------

    def on_frame(self, data: bytes, addr: Address) -> None:
        try:
            frame = decode_frame(data)
        except DecodeError:
            self.counts["bad_frame"] += 1
            return
        now = clock()
        self.path.receive(frame, addr, now)
        if isinstance(frame, Chat) and self.path.is_peer_chat(frame, addr):
            self.ui({"type": "p2p_message_received", "from_peer_id": self.path.peer_id,
                     "content": frame.text})
        self.service(now)

    def send_legacy_punches(self, offer: PeerOffer) -> None:
        """A peer with no token speaks the original protocol: its burst of three texts, 0.5 s
        apart, after which the original counted the link as up (seed 003)."""
        for number in (1, 2, 3):
            self.loop.call_later(0.5 * (number - 1), self.transport.sendto,
                                 encode_legacy_punch(self.worker_id, number),
                                 (offer.host, offer.port))
        self.loop.call_later(1.5, self.legacy_connected, offer)

    def legacy_connected(self, offer: PeerOffer) -> None:
        if self.path.offer == offer and self.path.state == "punching":
            self.path.state, self.path.reason = "connected", "original-protocol peer: unverified"
            self.changed()

    # -- driving the cores -------------------------------------------------------------------

    def service(self, now: float) -> None:
        """Send what the cores have to send, act on their events, re-arm the one timer."""
        for data, addr in self.path.datagrams_to_send(now):
            self.transport.sendto(data, addr)
        for event in self.path.events(now):
            self.on_path_event(event)
        self.arm_timer()

    def on_path_event(self, event: Any) -> None:
        if isinstance(event, PingResult):
            self.ui({"type": "p2p_ping_result", "rtt_ms": round(event.rtt * 1000, 3)})
        elif isinstance(event, PunchSucceeded | PunchFailed | PathLost | PathRestored):
            self.changed()
        else:  # PingTimedOut
            self.ui({"type": "p2p_ping_result", "error": "no answer from the peer"})

    def arm_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        when = self.path.get_timer()
        if when is not None:
            self.timer = self.loop.call_later(max(0.0, when - clock()), self.on_timer)

    def on_timer(self) -> None:
        self.timer = None
        now = clock()
        self.path.handle_timer(now)
        self.service(now)

    def changed(self) -> None:
        """The path changed (or is restated): save it, tell quic, ui and rendezvous_client."""
        if self.path.offer is not None:
            save_state(self.file, self.path.saved())
        self.publish()

    def publish(self) -> None:
        status = self.path.status()
        for name in ("quic", "ui", "rendezvous_client"):
            self.ctx.ref(name).tell(status)
        self.ui({"type": "p2p_status_update", "message": self.path.summary(),
                 "peer_id": status.peer_id})

    def ui(self, payload: dict[str, Any]) -> None:
        self.ctx.ref("ui").tell(UiEvent(payload))

