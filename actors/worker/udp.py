"""The udp actor: the worker's one UDP socket, its demultiplexer, and the punched path.

The socket is bound once by the worker's supervisor (``ctx.sockets["udp"]``), so a restart of this
actor keeps the port and the NAT mapping. Each datagram goes by its first byte
(``protocol.frames.classify``, RFC 7983/9443): STUN to ``stun``; QUIC from the peer to ``quic``,
batched per event-loop iteration; our own frames to the ``HolePunch`` / ``PathMonitor`` /
``PingTracker`` cores; the original system's JSON chat to the UI.

What survives a restart: the path. It is saved under ``ctx.rundir`` on every change, and a new
incarnation resumes it as it was (a CONNECTED path needs no new punching: same socket, same
mapping), then says so again to ``quic``, ``ui`` and ``rendezvous_client``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from typing import Any

import msgpack

from actors.actor import Actor
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
from protocol.frames import (
    Chat,
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
    encode_legacy_punch,
)
from protocol.holepunch import HolePunch, PunchFailed, PunchSucceeded
from protocol.path import PathLost, PathMonitor, PathRestored, PingResult, PingTracker, is_from_peer
from protocol.stun import Address

log = logging.getLogger(__name__)
# The cores' clock. Not loop.time(): uvloop's has millisecond resolution, and a loopback RTT
# is well under a millisecond.
clock = time.monotonic

# One UdpReceived stays well inside a 64 KiB mailbox datagram (messages.codec.MAX_FRAME_BYTES).
MAX_BATCH_BYTES = 48 * 1024


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


def batches(payloads: list[bytes]) -> list[list[bytes]]:
    """``payloads`` cut into lists of at most MAX_BATCH_BYTES each."""
    out: list[list[bytes]] = [[]]
    size = 0
    for payload in payloads:
        if out[-1] and size + len(payload) > MAX_BATCH_BYTES:
            out.append([])
            size = 0
        out[-1].append(payload)
        size += len(payload)
    return out



class PeerPath:
    """The path to the offered peer: the offer, where it stands, and the cores driving it.

    ``state``: idle, punching, connected, failed, lost, closed (the ``PathStatus`` states). The
    ``HolePunch`` stays after CONNECTED: it still answers a peer that has not seen our ack yet.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.punch_interval = float(config.get("punch_interval", 0.05))
        self.punch_deadline = float(config.get("punch_deadline", 10.0))
        self.ping_timeout = float(config.get("ping_timeout", 5.0))
        self.offer: PeerOffer | None = None
        self.token: bytes | None = None
        self.punch: HolePunch | None = None
        self.monitor: PathMonitor | None = None
        self.pinger: PingTracker | None = None
        self.state, self.reason, self.rtt = "idle", "", 0.0
        self.peer_addr: Address = ("", 0)

    @property
    def peer_id(self) -> str:
        return self.offer.peer_id if self.offer is not None else ""

    def start(self, offer: PeerOffer, local_id: str, now: float) -> None:
        """Punch towards ``offer``; with no token (the original system) the shell does it."""
        self.close("a new offer replaces this one")
        self.offer, self.peer_addr = offer, (offer.host, offer.port)
        self.state, self.reason, self.rtt = "punching", "", 0.0
        try:
            self.token = bytes.fromhex(offer.punch_token) if offer.punch_token else None
            if self.token is not None:
                self.punch = HolePunch(local_id, offer.peer_id, self.peer_addr, self.token, now,
                                       interval=self.punch_interval, deadline=self.punch_deadline)
        except (ValueError, UsageError) as exc:
            self.state, self.reason = "failed", f"unusable offer: {exc}"

    def connect(self, addr: Address, rtt: float, now: float) -> None:
        self.state, self.reason, self.peer_addr, self.rtt = "connected", "", addr, rtt
        if self.token is not None:
            self.monitor = PathMonitor(addr, self.token, now)
            self.pinger = PingTracker(addr, self.token, timeout=self.ping_timeout)

    def close(self, reason: str) -> None:
        if self.punch is not None and self.punch.state.value != "closed":
            self.punch.close()
        if self.monitor is not None and self.monitor.state.value != "closed":
            self.monitor.close()
        self.punch = self.monitor = self.pinger = None
        if self.offer is not None:
            self.state, self.reason = "closed", reason

    def cores(self) -> list[Any]:
        return [c for c in (self.punch, self.monitor, self.pinger) if c is not None]

    def receive(self, frame: Any, addr: Address, now: float) -> None:
        for core in self.cores():
            core.receive_frame(frame, addr, now)

    def is_peer_chat(self, chat: Chat, addr: Address) -> bool:
        """A chat counts only on a connected path, from the peer's endpoint, with the token."""
        return (self.state == "connected" and self.token is not None
                and is_from_peer(chat, addr, self.peer_addr, self.token))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return [d for core in self.cores() for d in core.datagrams_to_send(now)]

    def get_timer(self) -> float | None:
        return min((t for c in self.cores() if (t := c.get_timer()) is not None), default=None)

    def handle_timer(self, now: float) -> None:
        for core in self.cores():
            when = core.get_timer()
            if when is not None and when <= now:
                core.handle_timer(now)

    def events(self, now: float) -> list[Any]:
        """Every core's events, the path's state updated to match."""
        found = [e for core in self.cores() for e in iter(core.next_event, None)]
        for event in found:
            if isinstance(event, PunchSucceeded):
                self.connect(event.peer_addr, event.rtt, now)
            elif isinstance(event, PunchFailed):
                self.state, self.reason = "failed", event.reason
            elif isinstance(event, PathLost):
                self.state = "lost"
                self.reason = f"nothing from the peer for {event.silent_for:.0f} s"
            elif isinstance(event, PathRestored):
                self.state, self.reason = "connected", ""
        return found

    def status(self) -> PathStatus:
        host, port = self.peer_addr
        return PathStatus(self.state, self.peer_id, host, port, self.rtt, self.reason)

    def summary(self) -> str:
        host, port = self.peer_addr
        where = f"{self.peer_id} at {host}:{port}"
        return {
            "punching": f"punching a hole to {where}",
            "connected": f"P2P link active with {where} (rtt {self.rtt * 1000:.1f} ms)",
            "failed": f"hole punch to {where} failed: {self.reason}",
            "lost": f"P2P link to {where} lost: {self.reason}",
        }.get(self.state, f"P2P link to {where} {self.state}: {self.reason}")

    def describe(self) -> dict[str, Any]:
        host, port = self.peer_addr
        ignored = sum(sum(c.ignored.values()) if isinstance(c.ignored, collections.Counter)
                      else c.ignored for c in self.cores())
        return {"state": self.state, "peer_id": self.peer_id, "host": host, "port": port,
                "rtt_ms": round(self.rtt * 1000, 3), "reason": self.reason,
                "frames_ignored": ignored}

    def saved(self) -> dict[str, Any]:
        assert self.offer is not None
        offer = {f: getattr(self.offer, f) for f in self.offer.__dataclass_fields__}
        return {"offer": offer, "state": self.state, "reason": self.reason,
                "host": self.peer_addr[0], "port": self.peer_addr[1], "rtt": self.rtt}

    def resume(self, saved: dict[str, Any], local_id: str, now: float) -> bool:
        """Pick up a path saved by a previous incarnation; False if the file is unusable."""
        try:
            offer = PeerOffer(**saved["offer"])
            addr, state = (str(saved["host"]), int(saved["port"])), str(saved["state"])
            rtt, reason = float(saved["rtt"]), str(saved["reason"])
        except (KeyError, TypeError, ValueError):
            log.warning("unusable saved path ignored")
            return False
        self.start(offer, local_id, now)
        if state in ("connected", "lost") and self.punch is not None:
            # Same socket, same mapping: the hole is still open. No punching: a connected peer
            # acks punches but sends none, so a new HolePunch could only fail.
            self.punch.close()
            self.punch = None
            self.connect(addr, rtt, now)
        elif state in ("failed", "closed"):
            self.close(reason)
            self.state = state
        return True


def state_file(rundir: str, path: str, what: str) -> str:
    """Where actor ``path`` keeps ``what`` across its restarts (the run directory's life)."""
    return os.path.join(rundir, f"{path.replace('/', '.')}.{what}.state")


def save_state(file: str, state: Any) -> None:
    """Replace ``file`` atomically: a kill -9 mid-write leaves the old state, never half."""
    temp = f"{file}.{os.getpid()}.tmp"
    with open(temp, "wb") as out:
        out.write(msgpack.packb(state, use_bin_type=True))
    os.replace(temp, file)


def load_state(file: str) -> Any:
    try:
        with open(file, "rb") as f:
            return msgpack.unpackb(f.read(), raw=False)
    except FileNotFoundError:
        return None
    except (ValueError, msgpack.UnpackException):
        log.warning("unreadable state file %s ignored", file)
        return None


def remove_state(file: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(file)
