"""The udp actor: the worker's one UDP socket, its demultiplexer, and the punched path.

The socket is bound once by the worker's supervisor (``ctx.sockets["udp"]``), so a restart of this
actor keeps the port and the NAT mapping. Each datagram goes by its first byte
(``protocol.udp.classify``, RFC 7983/9443): STUN to ``stun``; QUIC from the peer to ``quic``,
batched per event-loop iteration; our own frames to the ``HolePunch`` / ``PathMonitor`` /
``PingTracker`` cores (``PathShell``, in ``udp_path_shell``); the original system's JSON chat to
the UI.

What survives a restart: the path (``PeerPath``, in ``udp_path``). It is saved under
``ctx.rundir`` on every change, and a new incarnation resumes it as it was (a CONNECTED path needs
no new punching: same socket, same mapping), then says so again to ``quic``, ``ui`` and
``rendezvous_client``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

from actors.actor import Actor
from actors.worker.core_driving import MAX_BATCH_BYTES, batches, clock
from actors.worker.state_files import load_state, remove_state, save_state, state_file
from actors.worker.udp_path import PeerPath
from actors.worker.udp_path_shell import PathShell
from messages.errors import DecodeError
from messages.worker import (
    ChatSend,
    PeerGone,
    PeerOffer,
    PingPeer,
    StatusRequest,
    UdpReceived,
    UdpSend,
)
from protocol.stun import Address
from protocol.udp import (
    DatagramKind,
    LegacyChat,
    LegacyPing,
    LegacyPunch,
    classify,
    decode_legacy,
    encode_legacy_ping,
)

# Names that moved to their own modules, still importable from here.
__all__ = ["MAX_BATCH_BYTES", "PeerPath", "UdpActor", "UdpProtocol", "batches", "clock",
           "load_state", "remove_state", "save_state", "state_file"]

log = logging.getLogger(__name__)


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, actor: UdpActor) -> None:
        self.actor = actor

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.actor.datagram_received(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the peer is not there (yet); punching carries on.
        log.info("udp socket error: %s", exc)


class UdpActor(PathShell, Actor):
    def on_start(self) -> Any:
        return self._start()

    async def _start(self) -> None:
        """The path first, then the socket: datagrams queued in the socket during a restart
        must find the path already there, or QUIC from the peer would be dropped."""
        self.loop = asyncio.get_running_loop()
        self.worker_id: str = self.ctx.config["worker_id"]
        self.counts: collections.Counter[str] = collections.Counter()
        self.to_quic: dict[Address, list[bytes]] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.chat_id = 0
        self.path = PeerPath(self.ctx.config)
        self.file = state_file(self.ctx.rundir, self.ctx.path, "path")
        saved = load_state(self.file)
        resumed = isinstance(saved, dict) and self.path.resume(saved, self.worker_id, clock())
        sock = self.ctx.sockets["udp"]
        self.local = sock.getsockname()[:2]
        self.transport, _ = await self.loop.create_datagram_endpoint(
            lambda: UdpProtocol(self), sock=sock)
        if resumed:
            log.info("resumed the path to %s (%s)", self.path.peer_id, self.path.state)
            self.changed()
            self.service(clock())

    def on_stop(self) -> None:
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
            self.send_chat(msg.text)
        elif isinstance(msg, PingPeer):
            self.send_ping()
        elif isinstance(msg, StatusRequest):
            return self.status()
        else:
            return super().on_receive(msg)
        return None

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
        if self.path.offer is None or addr != self.path.peer_addr:
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

    def on_legacy(self, data: bytes, addr: Address) -> None:
        """The original system's datagrams, from the peer's endpoint only (they hold no token)."""
        try:
            legacy = decode_legacy(data)
        except DecodeError:
            self.counts["bad_legacy"] += 1
            return
        if self.path.offer is None or addr != self.path.peer_addr:
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

