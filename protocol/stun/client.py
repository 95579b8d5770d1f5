"""One STUN Binding transaction over UDP (RFC 8489 §6.2.1, formerly RFC 5389 §7.2.1), sans-I/O.

The shell feeds datagrams and ``now``, sends what ``datagrams_to_send`` returns, and calls
``handle_timer`` at ``get_timer()``. With the defaults (RTO 0.5 s, Rc 7, Rm 16) requests go out
at 0, 0.5, 1.5, 3.5, 7.5, 15.5 and 31.5 s and the transaction fails at 39.5 s, as in the RFC.
"""

from __future__ import annotations

import collections
import enum
import logging
import secrets
from dataclasses import dataclass

from messages.errors import DecodeError, IllegalTransition, UsageError
from protocol.stun import BINDING, Address, StunClass, StunMessage, parse_message, serialize_message

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BindingSucceeded:
    mapped: Address
    server: Address
    rtt: float  # since the latest transmission: Karn's ambiguity is accepted, it is a hint


@dataclass(frozen=True)
class BindingFailed:
    reason: str


BindingEvent = BindingSucceeded | BindingFailed


class TransactionState(enum.Enum):
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


_TRANSITIONS = {
    TransactionState.WAITING: {TransactionState.SUCCEEDED, TransactionState.FAILED},
    TransactionState.SUCCEEDED: set(),
    TransactionState.FAILED: set(),
}


class StunTransaction:
    """Asks ``server`` for our mapped address; ``classic`` speaks RFC 3489 (no magic cookie)."""

    def __init__(self, server: Address, now: float, *, rto: float = 0.5, max_transmits: int = 7,
                 last_wait_factor: int = 16, classic: bool = False) -> None:
        if rto <= 0 or max_transmits < 1 or last_wait_factor < 1:
            raise UsageError(f"bad STUN retransmission settings: rto={rto}, "
                             f"Rc={max_transmits}, Rm={last_wait_factor}")
        self.server = server
        self.state = TransactionState.WAITING
        self._request = StunMessage(BINDING, StunClass.REQUEST,
                                    secrets.token_bytes(16 if classic else 12),
                                    magic_cookie=not classic)
        self._rto, self._max_transmits, self._last_wait = rto, max_transmits, rto * last_wait_factor
        self._transmits = 0
        self._interval = rto
        self._sent_at = now
        self._timer: float | None = None
        self._outbox: list[tuple[bytes, Address]] = []
        self._events: collections.deque[BindingEvent] = collections.deque()
        self._transmit(now)

    @property
    def transaction_id(self) -> bytes:
        return self._request.transaction_id

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        datagrams, self._outbox = self._outbox, []
        return datagrams

    def get_timer(self) -> float | None:
        return self._timer

    def handle_timer(self, now: float) -> None:
        """Retransmit or give up; early or late calls (a shell's timer race) are harmless."""
        if self._timer is None or now < self._timer:
            return
        if self._transmits < self._max_transmits:
            self._transmit(now)
        else:
            host, port = self.server
            self._finish(TransactionState.FAILED, BindingFailed(
                f"no answer from STUN server {host}:{port} after {self._transmits} tries"))

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> bool:
        """True if ``data`` was this transaction's answer (it then ends the transaction)."""
        if self.state is not TransactionState.WAITING:
            return False
        try:
            message = parse_message(data)
        except DecodeError as error:
            logger.debug("not a STUN answer from %s: %s", addr, error)
            return False
        if (message.transaction_id != self.transaction_id or message.method != BINDING
                or message.message_class not in (StunClass.SUCCESS, StunClass.ERROR)):
            return False
        self._finish(*self._outcome(message, now))
        return True

    def next_event(self) -> BindingEvent | None:
        return self._events.popleft() if self._events else None

    def _outcome(self, answer: StunMessage, now: float) -> tuple[TransactionState, BindingEvent]:
        host, port = self.server
        if answer.message_class is StunClass.ERROR:
            code, reason = answer.attribute("ERROR-CODE") or (0, "no ERROR-CODE")
            return TransactionState.FAILED, BindingFailed(
                f"STUN server {host}:{port} refused the Binding request: {code} {reason}")
        # RFC 8489 §14.2: XOR-MAPPED-ADDRESS; RFC 3489 servers only send MAPPED-ADDRESS.
        mapped = answer.attribute("XOR-MAPPED-ADDRESS") or answer.attribute("MAPPED-ADDRESS")
        if mapped is None:
            return TransactionState.FAILED, BindingFailed(
                f"STUN server {host}:{port} answered without a mapped address")
        return TransactionState.SUCCEEDED, BindingSucceeded(mapped, self.server,
                                                            now - self._sent_at)

    def _transmit(self, now: float) -> None:
        self._outbox.append((serialize_message(self._request), self.server))
        self._transmits += 1
        self._sent_at = now
        base = now if self._timer is None else self._timer  # deadlines keep the schedule
        if self._transmits == self._max_transmits:
            self._timer = base + self._last_wait  # RFC 8489 §6.2.1: Rm * RTO after the last
        else:
            self._timer = base + self._interval
            self._interval *= 2  # RFC 8489 §6.2.1: the interval doubles

    def _finish(self, new: TransactionState, event: BindingEvent) -> None:
        """The one place the state changes."""
        if new not in _TRANSITIONS[self.state]:
            raise IllegalTransition(f"STUN transaction {self.state.value} -> {new.value}")
        logger.info("STUN transaction %s: %s -> %s", self.transaction_id.hex(),
                    self.state.value, new.value)
        self.state = new
        self._timer = None
        self._events.append(event)
