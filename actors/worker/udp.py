"""The udp actor: the worker's one UDP socket, its demultiplexer, and the punched path.

The socket is bound once by the worker's supervisor (``ctx.sockets["udp"]``), so a restart of this
actor keeps the port and the NAT mapping. Each datagram goes by its first byte
(``protocol.udp.classify``, RFC 7983/9443): STUN to ``stun``; QUIC from the peer to ``quic``,
batched per event-loop iteration; our own frames to the path's sans-I/O core
(``protocol.udp.peer_path.PeerPath``, driven by a ``CoreDriver``); the original system's JSON chat
to the UI.

What survives a restart: the path. It is saved under ``ctx.rundir`` on every change, and a new
incarnation resumes it as it was (a CONNECTED path needs no new punching: same socket, same
mapping), then says so again to ``quic``, ``ui`` and ``rendezvous_client``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import struct
from typing import Any

from actors.actor import Actor
from actors.worker.driver import (
    CoreDriver,
    batches,
    clock,
    load_state,
    plain,
    remove_state,
    save_state,
    state_file,
)
from actors.worker.settings import PathSettings
from messages.errors import DecodeError, UsageError
from messages.worker import (
    ChatSend,
    PathStatus,
    PeerGone,
    PeerOffer,
    PingPeer,
    StatusRequest,
    UdpReceived,
    UdpSend,
    UiEvent,
)
from protocol.stun import Address
from protocol.udp import (
    Chat,
    ChatAck,
    DatagramKind,
    LegacyChat,
    LegacyPing,
    LegacyPunch,
    classify,
    decode_frame,
    decode_legacy,
    encode_frame,
    encode_legacy_chat,
    encode_legacy_ping,
)
from protocol.udp.holepunch import OpeningPunch
from protocol.udp.path import PingResult, is_from_peer
from protocol.udp.peer_path import PathChanged, PeerPath, PeerPathState

log = logging.getLogger(__name__)

# An opening punch must leave our NAT and die before the peer's: our host's router decrements
# it to 1, the next router (our ISP's, or the lab's internet) to 0. See protocol/udp/holepunch.
OPENING_TTL = 2


def send_with_ttl(sock: socket.socket, data: bytes, addr: Address, ttl: int) -> None:
    """One datagram with its own TTL (a cmsg, so nothing else on the socket is affected)."""
    if sock.family == socket.AF_INET6:
        level, option = socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT
    else:
        level, option = socket.IPPROTO_IP, socket.IP_TTL
    try:
        sock.sendmsg([data], [(level, option, struct.pack("i", ttl))], 0, addr)
    except OSError as exc:  # a full buffer or an unreachable net: punching carries on
        log.info("opening punch to %s not sent: %s", addr, exc)


CHAT_ACK_TIMEOUT = 5.0  # a UDP chat with no CHAT_ACK by then is marked failed (never resent)
MAX_UNACKED = 256  # chats awaiting their ack; beyond this the oldest is forgotten


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, actor: UdpActor) -> None:
        self.actor = actor

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.actor.datagram_received(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the peer is not there (yet); punching carries on.
        log.info("udp socket error: %s", exc)


class UdpActor(Actor):
    def on_start(self) -> Any:
        return self._start()

    async def _start(self) -> None:
        """The path first, then the socket: datagrams queued in the socket during a restart
        must find the path already there, or QUIC from the peer would be dropped."""
        self.loop = asyncio.get_running_loop()
        settings = PathSettings.from_config(self.ctx.config)
        self.worker_id = settings.worker_id
        self.counts: collections.Counter[str] = collections.Counter()
        self.to_quic: dict[Address, list[bytes]] = {}
        self.chat_id = 0
        self.unacked: dict[int, tuple[str, asyncio.TimerHandle]] = {}  # msg_id -> (ref, timer)
        self.offer: PeerOffer | None = None
        self.path = PeerPath(self.worker_id, punch_interval=settings.punch_interval,
                             punch_deadline=settings.punch_deadline,
                             ping_timeout=settings.ping_timeout,
                             opening=settings.punch_opening,
                             retry_after=settings.punch_retry_after)
        self.driver = CoreDriver(self.path, self.send, self.on_path_event)
        self.file = state_file(self.ctx.rundir, self.ctx.path, "path")
        resumed = self.resume(load_state(self.file))
        sock = self.sock = self.ctx.sockets["udp"]
        self.local = sock.getsockname()[:2]
        self.transport, _ = await self.loop.create_datagram_endpoint(
            lambda: UdpProtocol(self), sock=sock)
        if resumed:
            log.info("resumed the path to %s (%s)", self.path.peer_id, self.path.state.value)
            self.changed()
            self.driver.flush()

    def resume(self, saved: Any) -> bool:
        try:
            offer = PeerOffer(**saved["offer"])
        except (KeyError, TypeError):
            return False
        if not self.path.resume(offer.peer_id, (offer.host, offer.port), offer.punch_token,
                                saved, clock()):
            return False
        self.offer = offer
        return True

    def on_stop(self) -> None:
        self.driver.stop()
        for _, timer in self.unacked.values():
            timer.cancel()
        self.transport.close()

    # -- messages from the other actors ------------------------------------------------------

    def on_receive(self, msg: Any) -> Any:
        if isinstance(msg, UdpSend):
            for payload in msg.payloads:
                self.transport.sendto(payload, (msg.host, msg.port))
        elif isinstance(msg, PeerOffer):
            self.on_offer(msg)
        elif isinstance(msg, PeerGone):
            self.on_peer_gone(msg)
        elif isinstance(msg, ChatSend):
            self.send_chat(msg.text, msg.ref)
        elif isinstance(msg, PingPeer):
            self.send_ping()
        elif isinstance(msg, StatusRequest):
            return self.status()
        else:
            return super().on_receive(msg)
        return None

    def on_offer(self, offer: PeerOffer) -> None:
        if offer == self.offer and self.path.state in (PeerPathState.PUNCHING,
                                                       PeerPathState.CONNECTED):
            self.publish()  # the rendezvous repeated itself: nothing to redo
            return
        self.offer = offer
        self.path.start(offer.peer_id, (offer.host, offer.port), offer.punch_token, clock())
        self.changed()
        self.driver.flush()

    def on_peer_gone(self, gone: PeerGone) -> None:
        if self.offer is None or gone.peer_id != self.offer.peer_id:
            return
        self.path.close(f"peer left: {gone.reason}")
        self.changed()
        self.driver.arm_timer()
        self.offer = None
        self.path.forget()
        remove_state(self.file)

    def send_chat(self, text: str, ref: str = "") -> None:
        """One datagram, not resent; the peer's CHAT_ACK marks it delivered (``chat_state``)."""
        if self.offer is None or self.path.state is not PeerPathState.CONNECTED:
            self.chat_failed(ref, "no P2P path to a peer: chat not sent")
        elif self.path.token is None:  # a peer of the original system: its JSON chat
            self.transport.sendto(encode_legacy_chat(self.worker_id, text), self.path.peer_addr)
            self.chat_state(ref, "sent", "the peer's version sends no acknowledgement")
        else:
            self.chat_id = self.chat_id % 0xFFFFFFFF + 1
            try:
                frame = encode_frame(Chat(self.path.token, self.chat_id, text))
            except UsageError as exc:
                self.chat_failed(ref, f"chat not sent: {exc.reason}")
                return
            self.transport.sendto(frame, self.path.peer_addr)
            self.chat_state(ref, "sent")
            if ref:
                self.await_ack(self.chat_id, ref)
        self.driver.flush()

    def await_ack(self, msg_id: int, ref: str) -> None:
        if len(self.unacked) >= MAX_UNACKED:
            oldest = next(iter(self.unacked))
            self.unacked.pop(oldest)[1].cancel()
        timer = self.loop.call_later(CHAT_ACK_TIMEOUT, self.ack_missed, msg_id)
        self.unacked[msg_id] = (ref, timer)

    def ack_missed(self, msg_id: int) -> None:
        if (entry := self.unacked.pop(msg_id, None)) is not None:
            self.chat_state(entry[0], "failed", "no acknowledgement from the peer")

    def on_chat_ack(self, ack: ChatAck, addr: Address) -> None:
        token = self.path.token
        if token is None or not is_from_peer(ack, addr, self.path.peer_addr, token):
            self.counts["ack_from_stranger"] += 1
        elif (entry := self.unacked.pop(ack.msg_id, None)) is not None:
            entry[1].cancel()
            self.chat_state(entry[0], "delivered")

    def chat_failed(self, ref: str, reason: str) -> None:
        if ref:
            self.chat_state(ref, "failed", reason)
        else:
            self.ui({"type": "error", "message": reason})

    def chat_state(self, ref: str, state: str, reason: str = "") -> None:
        if ref:
            self.ui({"type": "chat_state", "transport": "udp", "ref": ref, "state": state,
                     "reason": reason})

    def send_ping(self) -> None:
        try:
            self.path.send_ping(clock())
        except UsageError as exc:
            self.ui({"type": "p2p_ping_result", "error": exc.reason})
            if self.path.pinger is None:
                return
        self.driver.flush()

    def status(self) -> dict[str, Any]:
        return {"worker_id": self.worker_id, "local_host": self.local[0],
                "local_port": self.local[1], "path": self.path.describe(),
                "counts": dict(self.counts)}

    # -- datagrams from the socket -----------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Address) -> None:
        kind = classify(data)
        if kind is DatagramKind.STUN:
            self.ctx.ref("stun").tell(UdpReceived(addr[0], addr[1], [data]))
        elif kind is DatagramKind.QUIC:
            self.forward_quic(data, addr)
        elif kind is DatagramKind.WORKER:
            self.on_frame(data, addr)
        elif kind in (DatagramKind.LEGACY_JSON, DatagramKind.LEGACY_TEXT):
            self.on_legacy(data, addr)
        else:
            self.counts["unknown"] += 1

    def forward_quic(self, data: bytes, addr: Address) -> None:
        """QUIC from the peer only; a burst read in one loop iteration leaves as one message."""
        if self.offer is None or addr != self.path.peer_addr:
            self.counts["quic_from_stranger"] += 1
            return
        if not self.to_quic:
            self.loop.call_soon(self.flush_quic)
        self.to_quic.setdefault(addr, []).append(data)

    def flush_quic(self) -> None:
        pending, self.to_quic = self.to_quic, {}
        quic = self.ctx.ref("quic")
        for (host, port), payloads in pending.items():
            for batch in batches(payloads):
                quic.tell(UdpReceived(host, port, batch))

    def on_frame(self, data: bytes, addr: Address) -> None:
        try:
            frame = decode_frame(data)
        except DecodeError:
            self.counts["bad_frame"] += 1
            return
        if isinstance(frame, ChatAck):
            return self.on_chat_ack(frame, addr)
        self.path.receive_frame(frame, addr, clock())
        if isinstance(frame, Chat) and self.path.is_peer_chat(frame, addr):
            self.ui({"type": "p2p_message_received", "from_peer_id": self.path.peer_id,
                     "content": frame.text})
            assert self.path.token is not None  # is_peer_chat says so
            self.transport.sendto(encode_frame(ChatAck(self.path.token, frame.msg_id)), addr)
        self.driver.flush()

    def on_legacy(self, data: bytes, addr: Address) -> None:
        """The original system's datagrams, from the peer's endpoint only (they hold no token)."""
        try:
            legacy = decode_legacy(data)
        except DecodeError:
            self.counts["bad_legacy"] += 1
            return
        if self.offer is None or addr != self.path.peer_addr:
            self.counts["legacy_from_stranger"] += 1
        elif isinstance(legacy, LegacyChat):
            self.ui({"type": "p2p_message_received", "from_peer_id": legacy.from_worker_id,
                     "content": legacy.content})
        elif isinstance(legacy, LegacyPing) and not legacy.is_response:
            answer = LegacyPing(True, self.worker_id, legacy.timestamp)
            self.transport.sendto(encode_legacy_ping(answer), addr)
        elif isinstance(legacy, LegacyPunch):
            self.counts["legacy_punch"] += 1
            log.info("hole punch ping %d of the original system from %s", legacy.number,
                     legacy.from_worker_id)

    # -- the core's output -------------------------------------------------------------------

    def send(self, datagrams: list[tuple[bytes, Address]]) -> None:
        for data, addr in datagrams:
            if isinstance(data, OpeningPunch):
                send_with_ttl(self.sock, data, addr, OPENING_TTL)
            else:
                self.transport.sendto(data, addr)

    def on_path_event(self, event: Any) -> None:
        if isinstance(event, PathChanged):
            self.changed()
        elif isinstance(event, PingResult):
            self.ui({"type": "p2p_ping_result", "rtt_ms": round(event.rtt * 1000, 3)})
        else:  # PingTimedOut
            self.ui({"type": "p2p_ping_result", "error": "no answer from the peer"})

    def changed(self) -> None:
        """The path changed (or is restated): save it, tell quic, ui and rendezvous_client."""
        if self.offer is not None:
            save_state(self.file, {"offer": plain(self.offer), **self.path.saved()})
        self.publish()

    def publish(self) -> None:
        host, port = self.path.peer_addr
        peer_id = self.offer.peer_id if self.offer is not None else ""
        status = PathStatus(self.path.state.value, peer_id, host, port, self.path.rtt,
                            self.path.reason)
        for name in ("quic", "ui", "rendezvous_client"):
            self.ctx.ref(name).tell(status)
        self.ui({"type": "p2p_status_update", "message": self.path.summary(),
                 "peer_id": status.peer_id})

    def ui(self, payload: dict[str, Any]) -> None:
        self.ctx.ref("ui").tell(UiEvent(payload))
