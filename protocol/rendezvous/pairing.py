"""Matchmaking of the rendezvous service, sans-I/O: who waits, who is paired with whom.

A worker enters with ``worker_ready(candidate)`` once it has a UDP endpoint and an open
connection (the registry decides that), and leaves with ``worker_gone``. Waiting workers are
paired first come, first served; each worker is in at most one pair. Every call returns events
(``protocol.rendezvous.events``) that carry the JSON messages to send (``Outbound``), built with
``protocol.rendezvous.wire``; ``snapshot``/``restore`` go through ``protocol.rendezvous.snapshot``.

Per worker, ``MatchState`` moves along ``MOVES``; ``check_move`` is the one place that allows a
move. Rules chosen here (docs/PROTOCOL.md repeats them):

- A paired worker that reports a new endpoint or certificate stays paired; its peer gets a fresh
  ``p2p_connection_offer`` with the same ``punch_token`` and roles (``PeerMoved``). An original
  worker simply punches towards the new address; a new one sees the token and keeps its pair.
- A worker whose peer leaves gets ``peer_disconnected`` and waits again at the tail of the queue.
- ``connect_request`` breaks the current pairs of both named workers (their old peers are told
  and re-queued); the new offer supersedes any earlier one.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from enum import Enum
from typing import Any

from messages.errors import IllegalTransition
from protocol.rendezvous import wire
from protocol.rendezvous.events import (
    REASON_DEREGISTERED,
    REASON_DISCONNECTED,
    REASON_REPAIRED,
    REASON_REPLACED,
    Candidate,
    Outbound,
    Pair,
    PairFormed,
    PairingEvent,
    PeerLeft,
    PeerMoved,
    RequestRefused,
)
from protocol.rendezvous.snapshot import pairing_snapshot, read_pairing_snapshot

logger = logging.getLogger(__name__)

# A punch token ties both offers of one pair together; 16 random bytes cannot be guessed.
PUNCH_TOKEN_BYTES = 16


class MatchState(Enum):
    ABSENT = "absent"
    WAITING = "waiting"
    PAIRED = "paired"


MOVES: dict[MatchState, frozenset[MatchState]] = {
    MatchState.ABSENT: frozenset({MatchState.WAITING}),
    MatchState.WAITING: frozenset({MatchState.PAIRED, MatchState.ABSENT}),
    MatchState.PAIRED: frozenset({MatchState.WAITING, MatchState.ABSENT}),
}


def check_move(worker_id: str, old: MatchState, new: MatchState) -> None:
    """Allow a move in ``MOVES`` (and log it), or raise ``IllegalTransition``."""
    if new not in MOVES[old]:
        raise IllegalTransition(f"worker {worker_id}: pairing cannot go {old.value} -> {new.value}")
    logger.info("worker %s: %s -> %s", worker_id, old.value, new.value)


def quic_role(worker_id: str, peer_id: str) -> str:
    """The worker whose id sorts lower is the QUIC client; both sides compute the same."""
    return "client" if worker_id < peer_id else "server"


def new_punch_token() -> str:
    return secrets.token_hex(PUNCH_TOKEN_BYTES)


class PairingTable:
    def __init__(self, token_factory: Callable[[], str] = new_punch_token) -> None:
        self._new_token = token_factory
        self._candidates: dict[str, Candidate] = {}
        self._waiting: dict[str, None] = {}  # insertion order is the FIFO queue
        self._pairs: dict[str, Pair] = {}  # both members map to their pair

    def state_of(self, worker_id: str) -> MatchState:
        if worker_id in self._pairs:
            return MatchState.PAIRED
        return MatchState.WAITING if worker_id in self._waiting else MatchState.ABSENT

    def peer_of(self, worker_id: str) -> str | None:
        pair = self._pairs.get(worker_id)
        return pair.peer_of(worker_id) if pair else None

    def worker_ready(self, candidate: Candidate) -> list[PairingEvent]:
        """The worker has a UDP endpoint and an open connection (new, or updated)."""
        worker_id = candidate.worker_id
        previous = self._candidates.get(worker_id)
        self._candidates[worker_id] = candidate
        state = self.state_of(worker_id)
        if state is MatchState.ABSENT:
            self._move(worker_id, MatchState.WAITING)
            return self.pair_waiting()
        if state is MatchState.WAITING or previous == candidate:
            return []
        pair = self._pairs[worker_id]
        peer_id = pair.peer_of(worker_id)
        return [PeerMoved(worker_id, peer_id, self._offer(peer_id, worker_id, pair))]

    def worker_gone(self, worker_id: str, reason: str) -> list[PairingEvent]:
        """The worker left (closed, deregistered, replaced); idempotent."""
        state = self.state_of(worker_id)
        if state is MatchState.ABSENT:
            return []
        if state is MatchState.WAITING:
            self._move(worker_id, MatchState.ABSENT)
            return []
        events: list[PairingEvent] = [self._dissolve(worker_id, reason, MatchState.ABSENT)]
        return events + self.pair_waiting()

    def connect_request(self, worker_id: str, peer_id: str) -> list[PairingEvent]:
        refusal = self._refusal(worker_id, peer_id)
        if refusal is not None:
            return [refusal]
        events: list[PairingEvent] = [
            self._dissolve(member, REASON_REPAIRED, MatchState.WAITING)
            for member in (worker_id, peer_id)
            if self.state_of(member) is MatchState.PAIRED
        ]
        events.append(self._form(worker_id, peer_id))
        return events + self.pair_waiting()

    def pair_waiting(self) -> list[PairingEvent]:
        """Pair the two longest-waiting workers while at least two wait."""
        events: list[PairingEvent] = []
        while len(self._waiting) >= 2:
            first, second = list(self._waiting)[:2]
            events.append(self._form(first, second))
        return events

    def _refusal(self, worker_id: str, peer_id: str) -> RequestRefused | None:
        if worker_id == peer_id:
            return _refuse(worker_id, "bad_request", "a worker cannot connect to itself")
        if worker_id not in self._candidates:
            reason = f"worker {worker_id} has no UDP endpoint yet: send update_udp_endpoint first"
            return _refuse(worker_id, "not_ready", reason)
        if peer_id not in self._candidates:
            reason = f"worker {peer_id} is not connected or has no UDP endpoint yet"
            return _refuse(worker_id, "peer_unavailable", reason)
        if self.peer_of(worker_id) == peer_id:
            return _refuse(worker_id, "already_paired", f"already paired with {peer_id}")
        return None

    def _form(self, first: str, second: str) -> PairFormed:
        pair = Pair(first, second, self._new_token())
        self._move(first, MatchState.PAIRED, pair)
        self._move(second, MatchState.PAIRED, pair)
        offers = (self._offer(first, second, pair), self._offer(second, first, pair))
        return PairFormed(first, second, pair.punch_token, offers)

    def _dissolve(self, leaver: str, reason: str, leaver_next: MatchState) -> PeerLeft:
        peer_id = self._pairs[leaver].peer_of(leaver)
        self._move(leaver, leaver_next)
        self._move(peer_id, MatchState.WAITING)
        notice = Outbound(peer_id, wire.peer_disconnected(leaver, reason))
        return PeerLeft(leaver, peer_id, reason, notice)

    def _offer(self, to_id: str, about_id: str, pair: Pair) -> Outbound:
        about = self._candidates[about_id]
        message = wire.p2p_connection_offer(
            about_id, about.udp_ip, about.udp_port, quic_role=quic_role(to_id, about_id),
            peer_cert_fingerprint=about.cert_fingerprint, punch_token=pair.punch_token,
        )
        return Outbound(to_id, message)

    def _move(self, worker_id: str, new: MatchState, pair: Pair | None = None) -> None:
        """The one place where a worker's pairing state changes."""
        check_move(worker_id, self.state_of(worker_id), new)
        self._waiting.pop(worker_id, None)
        self._pairs.pop(worker_id, None)
        if new is MatchState.WAITING:
            self._waiting[worker_id] = None
        elif new is MatchState.PAIRED and pair is not None:
            self._pairs[worker_id] = pair
        elif new is MatchState.ABSENT:
            del self._candidates[worker_id]

    def listing(self) -> dict[str, Any]:
        """The pairing part of ``/debug/list_workers`` (the original's field names)."""
        pairs = [[pair.first, pair.second] for pair in self._unique_pairs()]
        return {"ready_for_pairing_count": len(self._waiting), "ready_list": list(self._waiting),
                "pairs": pairs}

    def snapshot(self) -> dict[str, Any]:
        """Plain, msgpack-able state; ``restore`` rebuilds the table from it."""
        return pairing_snapshot(self._candidates.values(), self._waiting, self._unique_pairs())

    @classmethod
    def restore(
        cls, snapshot: dict[str, Any], token_factory: Callable[[], str] = new_punch_token,
    ) -> PairingTable:
        """Rebuild from ``snapshot``; candidates neither waiting nor paired are queued last.

        The edge may build the snapshot itself from what it relayed; call ``pair_waiting()``
        afterwards to pair anyone left waiting.
        """
        table = cls(token_factory)
        candidates, waiting, pairs = read_pairing_snapshot(snapshot)
        table._candidates = {candidate.worker_id: candidate for candidate in candidates}
        table._pairs = {member: pair for pair in pairs for member in (pair.first, pair.second)}
        table._waiting = dict.fromkeys(waiting)
        for worker_id in table._candidates:
            if table.state_of(worker_id) is MatchState.ABSENT:
                table._waiting[worker_id] = None
        return table

    def _unique_pairs(self) -> list[Pair]:
        return [pair for member, pair in self._pairs.items() if member == pair.first]


def _refuse(worker_id: str, code: str, reason: str) -> RequestRefused:
    return RequestRefused(worker_id, code, reason, Outbound(worker_id, wire.error(reason, code)))


__all__ = [
    "PUNCH_TOKEN_BYTES", "REASON_DISCONNECTED", "REASON_DEREGISTERED", "REASON_REPLACED",
    "REASON_REPAIRED", "MatchState", "MOVES", "check_move", "quic_role", "Candidate", "Pair",
    "Outbound", "PairFormed", "PeerLeft", "PeerMoved", "RequestRefused", "PairingEvent",
    "new_punch_token", "PairingTable",
]
