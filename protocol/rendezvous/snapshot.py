"""The plain, msgpack-able form of a ``PairingTable``'s state, written and read back.

A snapshot crosses a process boundary (the edge may even build one itself from what it
relayed), so ``read_pairing_snapshot`` treats it as hostile input: it returns valid values or
raises ``DecodeError``, nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from messages.errors import DecodeError
from protocol.rendezvous import wire
from protocol.rendezvous.events import Candidate, Pair


def pairing_snapshot(
    candidates: Iterable[Candidate], waiting: Iterable[str], pairs: Iterable[Pair],
) -> dict[str, Any]:
    return {
        "candidates": [asdict(candidate) for candidate in candidates],
        "waiting": list(waiting),
        "pairs": [asdict(pair) for pair in pairs],
    }


def read_pairing_snapshot(snapshot: Any) -> tuple[list[Candidate], list[str], list[Pair]]:
    """Validate a snapshot (it crossed a process boundary) or raise ``DecodeError``."""
    try:
        candidates = [_read_candidate(item) for item in snapshot["candidates"]]
        known = {candidate.worker_id for candidate in candidates}
        waiting = [wire.validate_worker_id(worker_id) for worker_id in snapshot["waiting"]]
        pairs = [Pair(item["first"], item["second"], item["punch_token"])
                 for item in snapshot["pairs"]]
    except (KeyError, TypeError) as missing:
        raise DecodeError(f"pairing snapshot is malformed: {missing!r}") from None
    members = waiting + [member for pair in pairs for member in (pair.first, pair.second)]
    if not all(isinstance(pair.punch_token, str) for pair in pairs):
        raise DecodeError("pairing snapshot has a punch token that is not a string")
    if len(members) != len(set(members)) or not set(members) <= known:
        raise DecodeError("pairing snapshot puts a worker twice or names an unknown worker")
    return candidates, waiting, pairs


def _read_candidate(item: dict[str, Any]) -> Candidate:
    endpoint = wire.UpdateUdpEndpoint.from_json(item)
    return Candidate(wire.validate_worker_id(item["worker_id"]), endpoint.udp_ip,
                     endpoint.udp_port, endpoint.cert_fingerprint)


__all__ = ["pairing_snapshot", "read_pairing_snapshot"]
