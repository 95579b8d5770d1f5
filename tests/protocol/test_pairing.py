"""PairingTable: FIFO pairing, leaving and re-queueing, connect_request, snapshot/restore."""

from __future__ import annotations

import itertools

import msgpack
import pytest

from messages.errors import DecodeError, IllegalTransition
from protocol.rendezvous.pairing import (
    REASON_DISCONNECTED,
    REASON_REPAIRED,
    Candidate,
    MatchState,
    Outbound,
    PairFormed,
    PairingTable,
    PeerLeft,
    PeerMoved,
    RequestRefused,
    check_move,
    new_punch_token,
    quic_role,
)

FINGERPRINT_A = "aa" * 32


def counting_tokens() -> PairingTable:
    """A table whose punch tokens are predictable: token-0, token-1, ..."""
    counter = itertools.count()
    return PairingTable(token_factory=lambda: f"token-{next(counter)}")


def candidate(worker_id: str, port: int = 4000, fingerprint: str | None = None) -> Candidate:
    return Candidate(worker_id, "192.0.2.1", port, fingerprint)


def arrive(table: PairingTable, *worker_ids: str) -> list:
    events: list = []
    for number, worker_id in enumerate(worker_ids):
        events += table.worker_ready(candidate(worker_id, 4000 + number))
    return events


def formed(events: list) -> list[tuple[str, str]]:
    return [(event.first, event.second) for event in events if isinstance(event, PairFormed)]


def test_two_workers_get_matching_offers() -> None:
    table = counting_tokens()
    assert table.worker_ready(candidate("w-b", 5000, FINGERPRINT_A)) == []
    events = table.worker_ready(candidate("w-a", 6000))
    offer_to_b = {"type": "p2p_connection_offer", "peer_worker_id": "w-a",
                  "peer_udp_ip": "192.0.2.1", "peer_udp_port": 6000, "quic_role": "server",
                  "peer_cert_fingerprint": None, "punch_token": "token-0"}
    offer_to_a = {"type": "p2p_connection_offer", "peer_worker_id": "w-b",
                  "peer_udp_ip": "192.0.2.1", "peer_udp_port": 5000, "quic_role": "client",
                  "peer_cert_fingerprint": FINGERPRINT_A, "punch_token": "token-0"}
    assert events == [PairFormed("w-b", "w-a", "token-0",
                                 (Outbound("w-b", offer_to_b), Outbound("w-a", offer_to_a)))]
    assert table.peer_of("w-a") == "w-b" and table.peer_of("w-b") == "w-a"


def test_quic_roles_are_complementary_and_follow_id_order() -> None:
    assert quic_role("a", "b") == "client" and quic_role("b", "a") == "server"
    assert quic_role("W9", "w1") == "client"  # plain code-point order: "W" < "w"


def test_default_punch_tokens_are_fresh_hex_of_16_bytes() -> None:
    table = PairingTable()
    tokens = [event.punch_token for event in arrive(table, "a", "b", "c", "d")]
    assert len(tokens) == 2 and tokens[0] != tokens[1]
    assert all(len(token) == 32 and int(token, 16) >= 0 for token in tokens)
    assert new_punch_token() != new_punch_token()


def test_many_workers_pair_in_arrival_order_and_the_odd_one_waits() -> None:
    table = counting_tokens()
    events = arrive(table, "w1", "w2", "w3", "w4", "w5")
    assert formed(events) == [("w1", "w2"), ("w3", "w4")]
    assert table.state_of("w5") is MatchState.WAITING
    assert table.listing() == {"ready_for_pairing_count": 1, "ready_list": ["w5"],
                               "pairs": [["w1", "w2"], ["w3", "w4"]]}


def test_a_worker_whose_peer_leaves_is_told_and_requeued_behind_earlier_waiters() -> None:
    table = counting_tokens()
    arrive(table, "w1", "w2", "w3", "w4", "w5")
    events = table.worker_gone("w1", REASON_DISCONNECTED)
    notice = {"type": "peer_disconnected", "peer_worker_id": "w1", "reason": "disconnected"}
    assert events[0] == PeerLeft("w1", "w2", REASON_DISCONNECTED, Outbound("w2", notice))
    assert formed(events[1:]) == [("w5", "w2")]  # w5 waited first
    assert table.state_of("w1") is MatchState.ABSENT
    assert table.worker_gone("w1", REASON_DISCONNECTED) == []  # idempotent


def test_a_waiting_worker_that_leaves_is_simply_dropped() -> None:
    table = counting_tokens()
    arrive(table, "w1", "w2", "w3")
    assert table.worker_gone("w3", REASON_DISCONNECTED) == []
    assert formed(arrive(table, "w4", "w5")) == [("w4", "w5")]


def test_no_worker_is_ever_in_two_pairs() -> None:
    table = counting_tokens()
    arrive(table, *[f"w{number}" for number in range(9)])
    table.worker_gone("w0", REASON_DISCONNECTED)
    table.connect_request("w8", "w3")
    arrive(table, "w9")
    members = [member for pair in table.listing()["pairs"] for member in pair]
    assert len(members) == len(set(members)) == 8
    assert not set(members) & set(table.listing()["ready_list"])


def test_endpoint_update_of_a_paired_worker_reoffers_to_its_peer_only() -> None:
    table = counting_tokens()
    arrive(table, "w1", "w2")
    events = table.worker_ready(candidate("w1", 7777, FINGERPRINT_A))
    assert len(events) == 1 and isinstance(events[0], PeerMoved)
    offer = events[0].offer
    assert (events[0].moved_id, offer.worker_id) == ("w1", "w2")
    assert offer.message["peer_udp_port"] == 7777
    assert offer.message["peer_cert_fingerprint"] == FINGERPRINT_A
    assert (offer.message["punch_token"], offer.message["quic_role"]) == ("token-0", "server")
    assert table.peer_of("w1") == "w2"
    assert table.worker_ready(candidate("w1", 7777, FINGERPRINT_A)) == []  # nothing changed


def test_endpoint_update_of_a_waiting_worker_is_used_by_its_later_offer() -> None:
    table = counting_tokens()
    table.worker_ready(candidate("w1", 1111))
    assert table.worker_ready(candidate("w1", 2222)) == []
    offer_to_w2 = table.worker_ready(candidate("w2"))[0].offers[1]
    assert offer_to_w2.message["peer_udp_port"] == 2222


def test_connect_request_pairs_a_waiting_worker_with_a_paired_one() -> None:
    table = counting_tokens()
    arrive(table, "w1", "w2", "w3")
    events = table.connect_request("w3", "w1")
    assert [type(event) for event in events] == [PeerLeft, PairFormed]
    assert (events[0].left_id, events[0].peer_id, events[0].reason) == ("w1", "w2", "repaired")
    assert formed(events) == [("w3", "w1")]
    assert formed(arrive(table, "w4")) == [("w2", "w4")]


def test_connect_request_across_two_pairs_requeues_both_abandoned_peers() -> None:
    table = counting_tokens()
    arrive(table, "w1", "w2", "w3", "w4")
    events = table.connect_request("w1", "w3")
    left = [(event.left_id, event.peer_id) for event in events if isinstance(event, PeerLeft)]
    assert left == [("w1", "w2"), ("w3", "w4")]
    assert all(event.reason == REASON_REPAIRED for event in events if isinstance(event, PeerLeft))
    assert formed(events) == [("w1", "w3"), ("w2", "w4")]


@pytest.mark.parametrize(("requester", "peer", "code"), [
    ("w1", "w1", "bad_request"),
    ("w9", "w1", "not_ready"),
    ("w1", "w9", "peer_unavailable"),
    ("w1", "w2", "already_paired"),
])
def test_connect_request_refusals_name_the_problem(requester: str, peer: str, code: str) -> None:
    table = counting_tokens()
    arrive(table, "w1", "w2", "w3")
    before = table.snapshot()
    [refusal] = table.connect_request(requester, peer)
    assert isinstance(refusal, RequestRefused) and refusal.code == code
    assert refusal.reply.worker_id == requester
    assert refusal.reply.message == {"type": "error", "message": refusal.reason, "code": code}
    assert table.snapshot() == before


def test_snapshot_survives_msgpack_and_restores_pairs_and_queue() -> None:
    table = counting_tokens()
    arrive(table, "w1", "w2", "w3")
    table.worker_ready(candidate("w2", 9999, FINGERPRINT_A))
    wire_copy = msgpack.unpackb(msgpack.packb(table.snapshot()))
    restored = PairingTable.restore(wire_copy, token_factory=lambda: "token-new")
    assert restored.snapshot() == table.snapshot()
    assert restored.listing() == table.listing()
    events = restored.worker_gone("w1", REASON_DISCONNECTED)
    assert formed(events) == [("w3", "w2")]
    assert events[1].offers[0].message["peer_udp_port"] == 9999


def test_restore_queues_candidates_the_snapshot_left_unplaced() -> None:
    snapshot = {"candidates": [{"worker_id": "w1", "udp_ip": "192.0.2.1", "udp_port": 1},
                               {"worker_id": "w2", "udp_ip": "192.0.2.2", "udp_port": 2}],
                "waiting": [], "pairs": []}
    table = PairingTable.restore(snapshot)
    assert table.listing()["ready_list"] == ["w1", "w2"]
    assert formed(table.pair_waiting()) == [("w1", "w2")]


@pytest.mark.parametrize("snapshot", [
    {},
    {"candidates": [{"worker_id": "w1"}], "waiting": [], "pairs": []},
    {"candidates": [{"worker_id": "w1", "udp_ip": "x", "udp_port": 1}], "waiting": [],
     "pairs": []},
    {"candidates": [], "waiting": ["w1"], "pairs": []},
    {"candidates": [{"worker_id": "w1", "udp_ip": "192.0.2.1", "udp_port": 1}],
     "waiting": ["w1"], "pairs": [{"first": "w1", "second": "w1", "punch_token": "t"}]},
    {"candidates": "nope", "waiting": [], "pairs": []},
    {"candidates": [{"worker_id": "w1", "udp_ip": "192.0.2.1", "udp_port": 1},
                    {"worker_id": "w2", "udp_ip": "192.0.2.1", "udp_port": 2}],
     "waiting": [], "pairs": [{"first": "w1", "second": "w2", "punch_token": 7}]},
])
def test_restore_refuses_a_malformed_snapshot(snapshot: dict) -> None:
    with pytest.raises(DecodeError):
        PairingTable.restore(snapshot)


@pytest.mark.parametrize(("old", "new"), [
    (MatchState.ABSENT, MatchState.ABSENT),
    (MatchState.ABSENT, MatchState.PAIRED),
    (MatchState.WAITING, MatchState.WAITING),
    (MatchState.PAIRED, MatchState.PAIRED),
])
def test_illegal_moves_raise(old: MatchState, new: MatchState) -> None:
    with pytest.raises(IllegalTransition, match=f"{old.value} -> {new.value}"):
        check_move("w1", old, new)


def test_moves_are_logged_old_to_new(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="protocol.rendezvous.pairing")
    arrive(counting_tokens(), "w1", "w2")
    assert "worker w1: absent -> waiting" in caplog.text
    assert "worker w2: waiting -> paired" in caplog.text
