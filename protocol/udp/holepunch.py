"""UDP hole punching towards one peer, sans-I/O (aioquic-style API).

Both workers send PUNCH frames to the endpoint the rendezvous service offered until each side
knows the path works both ways: a PUNCH from the peer proves peer -> us (we answer PUNCH_ACK),
a PUNCH_ACK for one of our punches proves us -> peer and back, so it alone is enough (a peer
that is already CONNECTED acks but no longer punches). -> CONNECTED. Every frame must hold the
pair's token. A NAT in front of the peer may rewrite its source port (RFC 4787 section 4.1:
address-dependent mapping), so we adopt the source of a frame that holds the token; once
CONNECTED the path is fixed and frames from any other address are ignored and counted.

The simultaneous-open race. A Linux NAT (conntrack) that receives the peer's punch before its own
host has sent anything records an UNREPLIED flow on exactly the tuple our own punch needs, so our
punch leaves by another port (RFC 4787 section 4.1 calls that port preservation failing) and the
peer's port-restricted NAT drops it; the peer's punches keep the stale entry alive. So for the
first ``opening`` seconds our punches are ``OpeningPunch`` datagrams, which the shell sends with
a small TTL: they create our NAT's mapping towards the peer but expire before the peer's NAT.
Both sides open their own mapping first; the first full punch then arrives as a reply. A punch
from the peer ends the opening at once (its NAT has a mapping, ours let it in).

    PUNCHING -> CONNECTED -> CLOSED
    PUNCHING -> FAILED    -> CLOSED
    PUNCHING ------------------> CLOSED
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
    TOKEN_SIZE,
    WORKER_ID,
    Frame,
    Punch,
    PunchAck,
    decode_frame,
    encode_frame,
)

logger = logging.getLogger(__name__)

MAX_UNACKED_PUNCHES = 256  # bounds memory if a shell picks a tiny interval and a long deadline


class OpeningPunch(bytes):
    """A punch to send with a TTL that leaves our NAT but dies before the peer's."""


@dataclass(frozen=True)
class PunchSucceeded:
    peer_addr: Address  # the endpoint the peer's frames really come from
    rtt: float  # from our first acknowledged PUNCH to its PUNCH_ACK


@dataclass(frozen=True)
class PunchFailed:
    reason: str


PunchEvent = PunchSucceeded | PunchFailed


class PunchState(enum.Enum):
    PUNCHING = "punching"
    CONNECTED = "connected"
    FAILED = "failed"
    CLOSED = "closed"


TRANSITIONS: dict[PunchState, frozenset[PunchState]] = {
    PunchState.PUNCHING: frozenset({PunchState.CONNECTED, PunchState.FAILED, PunchState.CLOSED}),
    PunchState.CONNECTED: frozenset({PunchState.CLOSED}),
    PunchState.FAILED: frozenset({PunchState.CLOSED}),
    PunchState.CLOSED: frozenset(),
}


class HolePunch:
    """Punches a hole to ``peer_addr``; ``ignored`` counts dropped frames by reason."""

    def __init__(self, local_id: str, peer_id: str, peer_addr: Address, token: bytes, now: float,
                 *, interval: float = 0.05, deadline: float = 10.0,
                 opening: float = 0.0) -> None:
        if len(token) != TOKEN_SIZE or not WORKER_ID.fullmatch(local_id) or interval <= 0:
            raise UsageError(f"bad hole punch settings: token of {len(token)} bytes, "
                             f"local id {local_id!r}, interval {interval}")
        self.local_id, self.peer_id, self.peer_addr = local_id, peer_id, peer_addr
        self.state = PunchState.PUNCHING
        self.ignored: collections.Counter[str] = collections.Counter()
        self._token, self._offered_addr, self._interval = token, peer_addr, interval
        self._deadline, self._deadline_at, self._next_punch_at = deadline, now + deadline, now
        self._opening_until = now + opening
        self._seq = 0
        self._sent_at: dict[int, float] = {}
        self._acks_due: collections.deque[int] = collections.deque(maxlen=32)
        self._highest_peer_seq = -1
        self._rtt: float | None = None
        self._events: collections.deque[PunchEvent] = collections.deque()

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        try:
            frame = decode_frame(data)
        except DecodeError:
            self.ignored["undecodable"] += 1
            return
        self.receive_frame(frame, addr, now)

    def receive_frame(self, frame: Frame, addr: Address, now: float) -> None:
        """Takes PUNCH and PUNCH_ACK; other frames belong to the path monitor and the apps."""
        if self.state not in (PunchState.PUNCHING, PunchState.CONNECTED):
            return
        if not isinstance(frame, Punch | PunchAck):
            return
        if not hmac.compare_digest(frame.token, self._token):
            self.ignored["wrong_token"] += 1
        elif isinstance(frame, Punch) and frame.sender_id != self.peer_id:
            self.ignored["wrong_sender"] += 1
        elif self._accept_source(frame, addr):
            if isinstance(frame, Punch):
                self._on_punch(frame, now)
            else:
                self._on_ack(frame, now)
            self._connect_if_proven()

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        datagrams = [(encode_frame(PunchAck(self._token, seq)), self.peer_addr)
                     for seq in self._acks_due]
        self._acks_due.clear()
        if self.state is PunchState.PUNCHING and now >= self._next_punch_at:
            punch = self._next_punch(now)
            if now < self._opening_until:
                punch = OpeningPunch(punch)
            datagrams.append((punch, self.peer_addr))
        return datagrams

    def get_timer(self) -> float | None:
        if self.state is not PunchState.PUNCHING:
            return None
        return min(self._next_punch_at, self._deadline_at)

    def handle_timer(self, now: float) -> None:
        if self.state is PunchState.PUNCHING and now >= self._deadline_at:
            self._transition(PunchState.FAILED)
            self._events.append(PunchFailed(self._failure_reason()))

    def next_event(self) -> PunchEvent | None:
        return self._events.popleft() if self._events else None

    def close(self) -> None:
        self._transition(PunchState.CLOSED)

    def _accept_source(self, frame: Punch | PunchAck, addr: Address) -> bool:
        """Whether a frame holding the token may come from ``addr``; adopts a rewritten port."""
        if addr == self.peer_addr:
            return True
        if self.state is PunchState.CONNECTED:
            self.ignored["stranger"] += 1
            return False
        replayed = (frame.seq <= self._highest_peer_seq if isinstance(frame, Punch)
                    else frame.seq not in self._sent_at)
        if replayed:
            self.ignored["replayed"] += 1
            return False
        logger.info("hole punch to %s: peer endpoint %s -> %s", self.peer_id, self.peer_addr, addr)
        self.peer_addr = addr
        return True

    def _on_punch(self, frame: Punch, now: float) -> None:
        first = self._highest_peer_seq < 0
        self._highest_peer_seq = max(self._highest_peer_seq, frame.seq)
        self._acks_due.append(frame.seq)
        self._opening_until = min(self._opening_until, now)
        if first and self._rtt is None and self.state is PunchState.PUNCHING:
            # The path now works inbound, so our earlier punches were probably dropped before
            # the peer knew the token (or by its NAT): punch again at once rather than waiting
            # out the interval; the connection is proven one round trip later.
            self._next_punch_at = min(self._next_punch_at, now)

    def _on_ack(self, frame: PunchAck, now: float) -> None:
        sent_at = self._sent_at.pop(frame.seq, None)
        if sent_at is None:
            self.ignored["unknown_ack"] += 1
        elif self._rtt is None:
            self._rtt = now - sent_at

    def _connect_if_proven(self) -> None:
        if self.state is PunchState.PUNCHING and self._rtt is not None:
            self._transition(PunchState.CONNECTED)
            self._events.append(PunchSucceeded(self.peer_addr, self._rtt))

    def _next_punch(self, now: float) -> bytes:
        self._seq += 1
        self._sent_at[self._seq] = now
        if len(self._sent_at) > MAX_UNACKED_PUNCHES:
            del self._sent_at[next(iter(self._sent_at))]
        self._next_punch_at = now + self._interval  # a late shell gets no burst of catch-up punches
        return encode_frame(Punch(self._token, self.local_id, self._seq))

    def _failure_reason(self) -> str:
        host, port = self._offered_addr
        if self._highest_peer_seq < 0:
            return (f"no answer from peer endpoint {host}:{port} within {self._deadline} s "
                    "(its NAT filters us, or either NAT maps each destination to a new port)")
        return (f"peer endpoint {host}:{port} reached us but acknowledged none of our punches "
                f"within {self._deadline} s; its NAT filters us?")

    def _transition(self, new: PunchState) -> None:
        """The one place the state changes (``TRANSITIONS``)."""
        if new not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"hole punch cannot go from {self.state.value} to {new.value}")
        logger.info("hole punch to %s: %s -> %s", self.peer_id, self.state.value, new.value)
        self.state = new
