"""The path to the offered peer, sans-I/O: where it stands, and the cores that drive it
(``HolePunch``, then ``PathMonitor`` and ``PingTracker``).

The owner feeds it offers, frames and ``now``, sends ``datagrams_to_send(now)``, re-arms one
timer from ``get_timer()``, calls ``handle_timer(now)`` and drains ``next_event()``. What the
owner asks for (``start``, ``close``, ``resume``) it knows it asked for; what happens by itself
(a punch that succeeds or fails, a path lost or restored) is a ``PathChanged`` event. The
``HolePunch`` stays after CONNECTED: it still answers a peer that has not seen our ack yet.

A peer of the original system (an offer with no token) gets the original's burst of three text
punches, 0.5 s apart, after which the original counted the link as up (seed 003).

Recovery. A FAILED punch is retried, and a LOST path re-punched, after ``retry_after`` seconds
of silence towards the peer, doubling up to ``RETRY_MAX``: a NAT forgets an unreplied UDP flow
30 s after its last packet (Linux conntrack's default), so a stale entry left by an earlier
attempt on the tuple we need is gone by then, as long as both sides stop sending; the monitor
of a LOST path sends no keepalives for that reason. Both sides run the same rule, so they
retry within the skew of their offers; a retry's opening (see ``holepunch``) is long enough to
absorb that skew. A frame from the peer ends LOST at once.

States move only along ``TRANSITIONS``::

    IDLE ──start──▶ PUNCHING ──punched──▶ CONNECTED ◀──restored── LOST
                     ▲ ▲ │                    │ └──────silent──────▶ │ │
                     │ │ ├──deadline──▶ FAILED│                      │ │
                     │ │ ▼                 ▼  ▼                      │ │
                     │ │ CLOSED ◀──────────┴──┴──────────────────────┘ │
                     │ └──start (a new offer)┘ │                       │
                     └──────retry─────────────┘ ◀────re-punch──────────┘
"""

from __future__ import annotations

import collections
import enum
import logging
from dataclasses import dataclass
from typing import Any

from messages.errors import IllegalTransition, UsageError
from protocol.stun import Address
from protocol.udp import Chat, Frame, encode_legacy_punch
from protocol.udp.holepunch import HolePunch, PunchFailed, PunchSucceeded
from protocol.udp.path import (
    PathLost,
    PathMonitor,
    PathRestored,
    PingResult,
    PingTimedOut,
    PingTracker,
    is_from_peer,
)

log = logging.getLogger(__name__)

LEGACY_PUNCHES = (0.0, 0.5, 1.0)  # when the original sent its three punches (seed 003)
LEGACY_UP_AFTER = 1.5  # and when it then counted the link as up
OPENING = 0.5  # first offer: covers the skew between the two offers' handling, even loaded
RETRY_OPENING = 1.0  # a retry's: the two sides' retry timers drift apart by their offers' skew
RETRY_AFTER = 35.0  # Linux conntrack forgets an unreplied UDP flow after 30 s
RETRY_MAX = 300.0


class PeerPathState(enum.Enum):
    IDLE = "idle"
    PUNCHING = "punching"
    CONNECTED = "connected"
    FAILED = "failed"
    LOST = "lost"
    CLOSED = "closed"


S = PeerPathState
TRANSITIONS: dict[PeerPathState, frozenset[PeerPathState]] = {
    S.IDLE: frozenset({S.PUNCHING}),
    S.PUNCHING: frozenset({S.CONNECTED, S.FAILED, S.CLOSED}),
    S.CONNECTED: frozenset({S.LOST, S.CLOSED}),
    S.LOST: frozenset({S.CONNECTED, S.PUNCHING, S.CLOSED}),
    S.FAILED: frozenset({S.PUNCHING, S.CLOSED}),
    S.CLOSED: frozenset({S.PUNCHING}),
}


@dataclass(frozen=True)
class PathChanged:
    state: PeerPathState
    reason: str


PeerPathEvent = PathChanged | PingResult | PingTimedOut


class PeerPath:
    """The path to one peer at a time."""

    def __init__(self, local_id: str, *, punch_interval: float = 0.05,
                 punch_deadline: float = 10.0, ping_timeout: float = 5.0,
                 opening: float = OPENING, retry_after: float = RETRY_AFTER) -> None:
        self.local_id = local_id
        self.punch_interval, self.punch_deadline = punch_interval, punch_deadline
        self.opening, self.retry_after = opening, retry_after
        self.retry_at: float | None = None
        self.retries = 0
        self.ping_timeout = ping_timeout
        self.peer_id = ""
        self.token: bytes | None = None
        self.punch: HolePunch | None = None
        self.monitor: PathMonitor | None = None
        self.pinger: PingTracker | None = None
        self.state, self.reason, self.rtt = S.IDLE, "", 0.0
        self.peer_addr: Address = ("", 0)
        self.offered_addr: Address = ("", 0)
        self.legacy_due: list[float] = []  # when the original-protocol punches leave
        self.legacy_up_at: float | None = None
        self._legacy_sent = 0
        self._events: collections.deque[PeerPathEvent] = collections.deque()

    # -- what the owner asks for -------------------------------------------------------------

    def start(self, peer_id: str, addr: Address, token_hex: str, now: float) -> None:
        """Punch towards ``addr``; with no token, as the original system did."""
        self.close("a new offer replaces this one")
        self.peer_id, self.peer_addr, self.rtt, self.retries = peer_id, addr, 0.0, 0
        self.offered_addr = addr
        self._transition(S.PUNCHING, "")
        try:
            self.token = bytes.fromhex(token_hex) if token_hex else None
            if self.token is not None:
                self._punch(now, self.opening)
        except (ValueError, UsageError) as exc:
            self._transition(S.FAILED, f"unusable offer: {exc}")
            return
        if self.token is None:
            self.legacy_due = [now + delay for delay in LEGACY_PUNCHES]
            self.legacy_up_at, self._legacy_sent = now + LEGACY_UP_AFTER, 0

    def _punch(self, now: float, opening: float) -> None:
        assert self.token is not None
        self.punch = HolePunch(self.local_id, self.peer_id, self.peer_addr, self.token, now,
                               interval=self.punch_interval, deadline=self.punch_deadline,
                               opening=opening)

    def close(self, reason: str) -> None:
        self._stop_cores()
        self.retry_at = None
        if self.state not in (S.IDLE, S.CLOSED):
            self._transition(S.CLOSED, reason)

    def forget(self) -> None:
        """The peer is gone (after ``close``): nothing is left of it to report."""
        self.peer_id, self.token = "", None

    def resume(self, peer_id: str, addr: Address, token_hex: str, saved: dict[str, Any],
               now: float) -> bool:
        """Pick up a path an earlier incarnation saved (``saved()``); False if unusable."""
        try:
            state, reason = PeerPathState(saved["state"]), str(saved["reason"])
            path_addr, rtt = (str(saved["host"]), int(saved["port"])), float(saved["rtt"])
        except (KeyError, TypeError, ValueError):
            log.warning("unusable saved path ignored")
            return False
        self.start(peer_id, addr, token_hex, now)
        if state in (S.CONNECTED, S.LOST) and self.punch is not None:
            # Same socket, same mapping: the hole is still open. No punching: a connected peer
            # acks punches but sends none, so a new HolePunch could only fail.
            self.punch.close()
            self.punch = None
            self._connect(path_addr, rtt, now)
        elif state is S.FAILED and self.state is S.PUNCHING:
            self._stop_cores()
            self._transition(S.FAILED, f"{reason.split('; ')[0]}; {self._schedule_retry(now)}")
        elif state in (S.FAILED, S.CLOSED):
            self.close(reason)
        return True

    def send_ping(self, now: float) -> None:
        if self.pinger is None:
            raise UsageError("no P2P path to a peer")
        self.pinger.send_ping(now)

    def receive_frame(self, frame: Frame, addr: Address, now: float) -> None:
        for core in self.cores():
            core.receive_frame(frame, addr, now)
        self._pump(now)

    def is_peer_chat(self, chat: Chat, addr: Address) -> bool:
        """A chat counts only on a connected path, from the peer's endpoint, with the token."""
        return (self.state is S.CONNECTED and self.token is not None
                and is_from_peer(chat, addr, self.peer_addr, self.token))

    # -- datagrams, timer, events ------------------------------------------------------------

    def cores(self) -> list[Any]:
        return [c for c in (self.punch, self.monitor, self.pinger) if c is not None]

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out = [d for core in self.cores() for d in core.datagrams_to_send(now)]
        while self.legacy_due and self.legacy_due[0] <= now:
            self.legacy_due.pop(0)
            self._legacy_sent += 1
            out.append((encode_legacy_punch(self.local_id, self._legacy_sent), self.peer_addr))
        self._pump(now)
        return out

    def get_timer(self) -> float | None:
        timers = [c.get_timer() for c in self.cores()] + [self.legacy_up_at, self.retry_at,
                                                          *self.legacy_due[:1]]
        return min((t for t in timers if t is not None), default=None)

    def handle_timer(self, now: float) -> None:
        for core in self.cores():
            when = core.get_timer()
            if when is not None and when <= now:
                core.handle_timer(now)
        if self.legacy_up_at is not None and now >= self.legacy_up_at:
            self.legacy_up_at = None
            if self.state is S.PUNCHING:
                self._transition(S.CONNECTED, "original-protocol peer: unverified")
                self._events.append(PathChanged(self.state, self.reason))
        if self.retry_at is not None and now >= self.retry_at:
            self._retry(now)
        self._pump(now)

    def next_event(self) -> PeerPathEvent | None:
        return self._events.popleft() if self._events else None

    def _pump(self, now: float) -> None:
        """The cores' events: the path's state follows them at once."""
        for event in [e for core in self.cores() for e in iter(core.next_event, None)]:
            if isinstance(event, PunchSucceeded):
                self._connect(event.peer_addr, event.rtt, now)
            elif isinstance(event, PunchFailed):
                self._transition(S.FAILED, f"{event.reason}; {self._schedule_retry(now)}")
            elif isinstance(event, PathLost):
                self._transition(S.LOST, f"nothing from the peer for {event.silent_for:.0f} s; "
                                         f"{self._schedule_retry(now)}")
            elif isinstance(event, PathRestored):
                self.retry_at = None
                self._transition(S.CONNECTED, "")
            else:
                self._events.append(event)
                continue
            self._events.append(PathChanged(self.state, self.reason))

    def _schedule_retry(self, now: float) -> str:
        """Silence first, then a new punch: see the module's docstring."""
        wait = min(self.retry_after * 2 ** min(self.retries, 16), RETRY_MAX)
        self.retry_at = now + wait
        return f"punching again in {wait:.0f} s"

    def _retry(self, now: float) -> None:
        self.retry_at = None
        self.retries += 1
        self._stop_cores()
        if self.state is S.FAILED:  # a port adopted from the failed attempt may be stale
            self.peer_addr = self.offered_addr
        self._transition(S.PUNCHING, f"attempt {self.retries + 1}")
        self._punch(now, RETRY_OPENING)
        self._events.append(PathChanged(self.state, self.reason))

    def _stop_cores(self) -> None:
        if self.punch is not None and self.punch.state.value != "closed":
            self.punch.close()
        if self.monitor is not None and self.monitor.state.value != "closed":
            self.monitor.close()
        self.punch = self.monitor = self.pinger = None
        self.legacy_due, self.legacy_up_at = [], None

    def _connect(self, addr: Address, rtt: float, now: float) -> None:
        self.peer_addr, self.rtt, self.retries = addr, rtt, 0
        self._transition(S.CONNECTED, "")
        if self.token is not None:
            self.monitor = PathMonitor(addr, self.token, now)
            self.pinger = PingTracker(addr, self.token, timeout=self.ping_timeout)

    def _transition(self, new: PeerPathState, reason: str) -> None:
        """The one place the state changes (``TRANSITIONS``)."""
        if new not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"peer path cannot go from {self.state.value} "
                                    f"to {new.value}")
        log.info("path to %s: %s -> %s %s", self.peer_id, self.state.value, new.value, reason)
        self.state, self.reason = new, reason

    # -- what the owner reports and saves ----------------------------------------------------

    def summary(self) -> str:
        host, port = self.peer_addr
        where = f"{self.peer_id} at {host}:{port}"
        return {
            S.PUNCHING: f"punching a hole to {where}",
            S.CONNECTED: f"P2P link active with {where} (rtt {self.rtt * 1000:.1f} ms)",
            S.FAILED: f"hole punch to {where} failed: {self.reason}",
            S.LOST: f"P2P link to {where} lost: {self.reason}",
        }.get(self.state, f"P2P link to {where} {self.state.value}: {self.reason}")

    def describe(self) -> dict[str, Any]:
        host, port = self.peer_addr
        ignored = sum(sum(c.ignored.values()) if isinstance(c.ignored, collections.Counter)
                      else c.ignored for c in self.cores())
        return {"state": self.state.value, "peer_id": self.peer_id, "host": host, "port": port,
                "rtt_ms": round(self.rtt * 1000, 3), "reason": self.reason,
                "frames_ignored": ignored}

    def saved(self) -> dict[str, Any]:
        return {"state": self.state.value, "reason": self.reason, "host": self.peer_addr[0],
                "port": self.peer_addr[1], "rtt": self.rtt}
