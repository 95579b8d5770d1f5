"""The punched path once CONNECTED: keepalives, liveness and P2P ping, sans-I/O.

``PathMonitor`` sends a KEEPALIVE every 15 s: most NATs drop an idle UDP binding after 30 s or
more (RFC 4787 section 4.3, REQ-5 asks for no less than 2 minutes but many use less), so two
keepalives fit in the shortest common timeout. Any valid frame from the peer refreshes the path;
none for ``dead_after`` seconds -> ``PathLost``; a valid frame after that -> ``PathRestored``.
A LOST path sends no keepalives: they would keep alive whatever stale NAT state broke it (see
``peer_path``'s recovery).

    ALIVE <-> LOST,  ALIVE -> CLOSED,  LOST -> CLOSED

``PingTracker`` answers the peer's PINGs and matches PONGs to the pings it issued.
"""

from __future__ import annotations

import collections
import enum
import hmac
import logging
from dataclasses import dataclass

from messages.errors import DecodeError, IllegalTransition, UsageError
from protocol.stun import Address
from protocol.udp import (
    BenchData,
    BenchEnd,
    Frame,
    Keepalive,
    Ping,
    Pong,
    decode_frame,
    encode_frame,
)

logger = logging.getLogger(__name__)

KEEPALIVE_INTERVAL = 15.0
DEAD_AFTER = 3 * KEEPALIVE_INTERVAL  # three keepalives in a row lost before we give up
PING_TIMEOUT = 5.0
MAX_PINGS_IN_FLIGHT = 64  # a UI that spams ping gets a UsageError, not unbounded memory


def is_from_peer(frame: Frame, addr: Address, peer_addr: Address, token: bytes) -> bool:
    """Whether a frame comes from the peer's endpoint and, if it carries one, holds our token.

    Benchmark frames carry no token (every byte goes to payload); the address vouches for them.
    """
    if addr != peer_addr:
        return False
    return isinstance(frame, BenchData | BenchEnd) or hmac.compare_digest(frame.token, token)


@dataclass(frozen=True)
class PathLost:
    peer_addr: Address
    silent_for: float


@dataclass(frozen=True)
class PathRestored:
    peer_addr: Address


PathEvent = PathLost | PathRestored


class PathState(enum.Enum):
    ALIVE = "alive"
    LOST = "lost"
    CLOSED = "closed"


TRANSITIONS: dict[PathState, frozenset[PathState]] = {
    PathState.ALIVE: frozenset({PathState.LOST, PathState.CLOSED}),
    PathState.LOST: frozenset({PathState.ALIVE, PathState.CLOSED}),
    PathState.CLOSED: frozenset(),
}


class PathMonitor:
    """Keeps the punched path to ``peer_addr`` open and says when it goes silent."""

    def __init__(self, peer_addr: Address, token: bytes, now: float, *,
                 keepalive_interval: float = KEEPALIVE_INTERVAL,
                 dead_after: float = DEAD_AFTER) -> None:
        if keepalive_interval <= 0 or dead_after <= keepalive_interval:
            raise UsageError(f"dead_after ({dead_after} s) must exceed the keepalive "
                             f"interval ({keepalive_interval} s), which must be positive")
        self.peer_addr, self.state = peer_addr, PathState.ALIVE
        self.ignored = 0
        self._token, self._interval, self._dead_after = token, keepalive_interval, dead_after
        self._last_heard, self._next_keepalive_at = now, now + keepalive_interval
        self._events: collections.deque[PathEvent] = collections.deque()

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        try:
            self.receive_frame(decode_frame(data), addr, now)
        except DecodeError:
            self.ignored += 1

    def receive_frame(self, frame: Frame, addr: Address, now: float) -> None:
        if self.state is PathState.CLOSED:
            return
        if not is_from_peer(frame, addr, self.peer_addr, self._token):
            self.ignored += 1
            return
        self._last_heard = now
        if self.state is PathState.LOST:
            self._transition(PathState.ALIVE)
            self._events.append(PathRestored(self.peer_addr))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        if self.state is not PathState.ALIVE or now < self._next_keepalive_at:
            return []
        self._next_keepalive_at = now + self._interval
        return [(encode_frame(Keepalive(self._token)), self.peer_addr)]

    def get_timer(self) -> float | None:
        if self.state is not PathState.ALIVE:
            return None
        return min(self._next_keepalive_at, self._last_heard + self._dead_after)

    def handle_timer(self, now: float) -> None:
        silent_for = now - self._last_heard
        if self.state is PathState.ALIVE and silent_for >= self._dead_after:
            self._transition(PathState.LOST)
            self._events.append(PathLost(self.peer_addr, silent_for))

    def next_event(self) -> PathEvent | None:
        return self._events.popleft() if self._events else None

    def close(self) -> None:
        self._transition(PathState.CLOSED)

    def _transition(self, new: PathState) -> None:
        """The one place the state changes (``TRANSITIONS``)."""
        if new not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"path cannot go from {self.state.value} to {new.value}")
        logger.info("path to %s: %s -> %s", self.peer_addr, self.state.value, new.value)
        self.state = new


@dataclass(frozen=True)
class PingResult:
    ping_id: int
    rtt: float


@dataclass(frozen=True)
class PingTimedOut:
    ping_id: int


PingEvent = PingResult | PingTimedOut


class PingTracker:
    """Issues PINGs, answers the peer's, and reports each of ours as a result or a timeout."""

    def __init__(self, peer_addr: Address, token: bytes, *, timeout: float = PING_TIMEOUT) -> None:
        self.peer_addr, self.ignored = peer_addr, 0
        self._token, self._timeout = token, timeout
        self._last_id = 0
        self._sent_at: dict[int, float] = {}
        self._outbox: list[Ping | Pong] = []
        self._events: collections.deque[PingEvent] = collections.deque()

    def send_ping(self, now: float) -> int:
        if len(self._sent_at) >= MAX_PINGS_IN_FLIGHT:
            raise UsageError(f"{MAX_PINGS_IN_FLIGHT} pings already in flight to {self.peer_addr}")
        self._last_id = self._last_id % 0xFFFFFFFF + 1  # u32 on the wire, never 0
        self._sent_at[self._last_id] = now
        self._outbox.append(Ping(self._last_id, self._token))
        return self._last_id

    def receive_frame(self, frame: Frame, addr: Address, now: float) -> None:
        """Takes PING and PONG; a PONG we did not ask for (or no longer wait for) is ignored."""
        if not isinstance(frame, Ping | Pong):
            return
        if not is_from_peer(frame, addr, self.peer_addr, self._token):
            self.ignored += 1
        elif isinstance(frame, Ping):
            self._outbox.append(Pong(frame.ping_id, self._token))
        elif frame.ping_id in self._sent_at:
            self._events.append(PingResult(frame.ping_id, now - self._sent_at.pop(frame.ping_id)))
        else:
            self.ignored += 1

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        datagrams = [(encode_frame(frame), self.peer_addr) for frame in self._outbox]
        self._outbox.clear()
        return datagrams

    def get_timer(self) -> float | None:
        return min(self._sent_at.values()) + self._timeout if self._sent_at else None

    def handle_timer(self, now: float) -> None:
        for ping_id, sent_at in list(self._sent_at.items()):
            if now >= sent_at + self._timeout:
                del self._sent_at[ping_id]
                self._events.append(PingTimedOut(ping_id))

    def next_event(self) -> PingEvent | None:
        return self._events.popleft() if self._events else None
