"""The path to the offered peer: the offer, where the path stands, and the sans-I/O cores driving
it (``HolePunch``, then ``PathMonitor`` and ``PingTracker``). No socket and no clock: the udp actor
feeds it frames and ``now``, and saves what ``saved()`` returns so a new incarnation can
``resume()`` the path as it was.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

from messages.errors import UsageError
from messages.worker import PathStatus, PeerOffer
from protocol.stun import Address
from protocol.udp import Chat
from protocol.udp.holepunch import HolePunch, PunchFailed, PunchSucceeded
from protocol.udp.path import PathLost, PathMonitor, PathRestored, PingTracker, is_from_peer

log = logging.getLogger(__name__)


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
