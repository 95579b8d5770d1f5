"""Hole punching through simulated NATs (tests/support/netsim.py), then keepalives, liveness
and ping."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from messages.errors import IllegalTransition, UsageError
from protocol.stun import Address
from protocol.udp import Keepalive, Ping, Pong, Punch, PunchAck, decode_frame, encode_frame
from protocol.udp.holepunch import TRANSITIONS, HolePunch, PunchFailed, PunchState, PunchSucceeded
from protocol.udp.path import (
    MAX_PINGS_IN_FLIGHT,
    PathLost,
    PathMonitor,
    PathRestored,
    PathState,
    PingResult,
    PingTimedOut,
    PingTracker,
)
from protocol.udp.path import TRANSITIONS as PATH_TRANSITIONS
from tests.support.netsim import Nat, NatKind, Network, run

TOKEN = bytes(range(16))
OTHER_TOKEN = bytes(range(1, 17))
LATENCY = 0.01
STRANGER: Address = ("203.0.113.66", 9999)
FULL, RESTRICTED, SYMMETRIC = NatKind.FULL_CONE, NatKind.PORT_RESTRICTED, NatKind.SYMMETRIC


def drain(core: HolePunch | PathMonitor | PingTracker) -> list[object]:
    events = []
    while (event := core.next_event()) is not None:
        events.append(event)
    return events


@dataclass
class Pair:
    net: Network
    a: Address  # alice's private endpoint
    b: Address  # bob's private endpoint
    a_public: Address  # what STUN told alice, and the rendezvous service offered bob
    b_public: Address
    alice: HolePunch
    bob: HolePunch

    def run(self, until: float) -> float:
        return run(self.net, {self.a: self.alice, self.b: self.bob}, 0.0, until)


def pair(kind_a: NatKind, kind_b: NatKind, *, deadline: float = 10.0) -> Pair:
    net = Network(latency=LATENCY)
    a = net.add_host(("10.0.0.2", 5000), Nat("203.0.113.1", kind_a))
    b = net.add_host(("192.168.1.2", 5000), Nat("198.51.100.1", kind_b))
    a_public, b_public = net.stun_mapping(a), net.stun_mapping(b)
    alice = HolePunch("alice", "bob", b_public, TOKEN, 0.0, deadline=deadline)
    bob = HolePunch("bob", "alice", a_public, TOKEN, 0.0, deadline=deadline)
    return Pair(net, a, b, a_public, b_public, alice, bob)


@pytest.mark.parametrize(("kind_a", "kind_b"), [(FULL, FULL), (RESTRICTED, RESTRICTED),
                                                (FULL, RESTRICTED)])
def test_cone_nats_connect_at_the_offered_endpoints(kind_a: NatKind, kind_b: NatKind) -> None:
    p = pair(kind_a, kind_b)
    p.run(until=1.0)
    assert drain(p.alice) == [PunchSucceeded(p.b_public, pytest.approx(2 * LATENCY))]
    assert drain(p.bob) == [PunchSucceeded(p.a_public, pytest.approx(2 * LATENCY))]
    assert p.alice.state is p.bob.state is PunchState.CONNECTED
    assert p.alice.get_timer() is p.bob.get_timer() is None  # nothing left to punch


def test_full_cone_adopts_the_port_a_symmetric_nat_chose() -> None:
    p = pair(FULL, SYMMETRIC)
    p.run(until=1.0)
    bob_towards_alice = p.net.nat_of[p.b].outbound(p.b, p.a_public)  # APDM: not the STUN port
    assert bob_towards_alice != p.b_public
    assert drain(p.alice) == [PunchSucceeded(bob_towards_alice, pytest.approx(2 * LATENCY))]
    assert drain(p.bob) == [PunchSucceeded(p.a_public, pytest.approx(2 * LATENCY))]
    assert p.alice.peer_addr == bob_towards_alice


@pytest.mark.parametrize(("kind_a", "kind_b"), [(SYMMETRIC, SYMMETRIC), (RESTRICTED, SYMMETRIC),
                                                (SYMMETRIC, RESTRICTED)])
def test_symmetric_against_a_filtering_nat_fails_with_a_clear_reason(
        kind_a: NatKind, kind_b: NatKind) -> None:
    p = pair(kind_a, kind_b)
    stopped = p.run(until=20.0)
    assert stopped == pytest.approx(10.0)
    for punch, offered in ((p.alice, p.b_public), (p.bob, p.a_public)):
        reason = f"no answer from peer endpoint {offered[0]}:{offered[1]} within 10.0 s " \
                 "(its NAT filters us, or either NAT maps each destination to a new port)"
        assert drain(punch) == [PunchFailed(reason)]
        assert punch.state is PunchState.FAILED and punch.get_timer() is None
    assert len(p.net.dropped) == p.net.sent  # every punch was filtered by a NAT


def test_punches_go_out_every_interval_until_the_deadline() -> None:
    punch = HolePunch("alice", "bob", ("198.51.100.1", 40000), TOKEN, 100.0,
                      interval=0.25, deadline=1.0)
    sent_at = []
    while (timer := punch.get_timer()) is not None:
        punch.handle_timer(timer)
        sent_at += [timer for _ in punch.datagrams_to_send(timer)]
    assert sent_at == [100.0, 100.25, 100.5, 100.75]
    assert drain(punch) == [PunchFailed("no answer from peer endpoint 198.51.100.1:40000 "
                                        "within 1.0 s (its NAT filters us, or either NAT maps "
                                        "each destination to a new port)")]


def test_frames_with_a_wrong_token_or_sender_are_ignored_and_counted() -> None:
    p = pair(FULL, FULL)
    p.alice.receive_datagram(encode_frame(Punch(OTHER_TOKEN, "bob", 1)), p.b_public, 0.01)
    p.alice.receive_datagram(encode_frame(Punch(TOKEN, "mallory", 1)), p.b_public, 0.01)
    p.alice.receive_datagram(encode_frame(PunchAck(OTHER_TOKEN, 1)), STRANGER, 0.01)
    p.alice.receive_datagram(b"\x0b\x01\x01garbage", p.b_public, 0.01)
    assert p.alice.ignored == {"wrong_token": 2, "wrong_sender": 1, "undecodable": 1}
    sent = [decode_frame(d) for d, _ in p.alice.datagrams_to_send(0.01)]
    assert sent == [Punch(TOKEN, "alice", 1)]  # its own first punch, and no PUNCH_ACK
    assert p.alice.state is PunchState.PUNCHING and p.alice.peer_addr == p.b_public


def test_a_replayed_frame_from_a_stranger_does_not_hijack_the_path() -> None:
    alice = HolePunch("alice", "bob", ("198.51.100.1", 40000), TOKEN, 0.0)
    bob_punch = encode_frame(Punch(TOKEN, "bob", 1))
    alice.receive_datagram(bob_punch, ("198.51.100.1", 40000), 0.01)
    alice.receive_datagram(bob_punch, STRANGER, 0.02)  # replayed while still punching
    alice.datagrams_to_send(0.0)
    alice.receive_datagram(encode_frame(PunchAck(TOKEN, 1)), ("198.51.100.1", 40000), 0.03)
    assert drain(alice) == [PunchSucceeded(("198.51.100.1", 40000), pytest.approx(0.03))]
    alice.receive_datagram(encode_frame(Punch(TOKEN, "bob", 9)), STRANGER, 0.04)  # after CONNECTED
    assert alice.peer_addr == ("198.51.100.1", 40000)
    assert alice.ignored == {"replayed": 1, "stranger": 1}
    assert all(addr != STRANGER for _, addr in alice.datagrams_to_send(0.05))


def test_connected_side_keeps_acking_a_peer_that_missed_the_ack() -> None:
    alice = HolePunch("alice", "bob", ("198.51.100.1", 40000), TOKEN, 0.0)
    alice.datagrams_to_send(0.0)
    alice.receive_datagram(encode_frame(Punch(TOKEN, "bob", 1)), ("198.51.100.1", 40000), 0.01)
    alice.receive_datagram(encode_frame(PunchAck(TOKEN, 1)), ("198.51.100.1", 40000), 0.02)
    assert [decode_frame(d) for d, _ in alice.datagrams_to_send(0.02)] == [PunchAck(TOKEN, 1)]
    alice.receive_datagram(encode_frame(Punch(TOKEN, "bob", 2)), ("198.51.100.1", 40000), 0.06)
    assert [decode_frame(d) for d, _ in alice.datagrams_to_send(0.06)] == [PunchAck(TOKEN, 2)]
    assert drain(alice) == [PunchSucceeded(("198.51.100.1", 40000), pytest.approx(0.02))]


def test_half_open_path_fails_with_its_own_reason() -> None:
    alice = HolePunch("alice", "bob", ("198.51.100.1", 40000), TOKEN, 0.0, deadline=2.0)
    alice.receive_datagram(encode_frame(Punch(TOKEN, "bob", 1)), ("198.51.100.1", 40000), 0.5)
    alice.handle_timer(2.0)
    assert drain(alice) == [PunchFailed("peer endpoint 198.51.100.1:40000 reached us but "
                                        "acknowledged none of our punches within 2.0 s; "
                                        "its NAT filters us?")]


def test_bad_settings_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        HolePunch("alice", "bob", ("198.51.100.1", 1), TOKEN[:8], 0.0)
    with pytest.raises(UsageError):
        HolePunch("alice!", "bob", ("198.51.100.1", 1), TOKEN, 0.0)
    with pytest.raises(UsageError):
        PathMonitor(("198.51.100.1", 1), TOKEN, 0.0, keepalive_interval=15, dead_after=10)


ILLEGAL_PUNCH = [(old, new) for old in PunchState for new in PunchState
                 if new not in TRANSITIONS[old]]
ILLEGAL_PATH = [(old, new) for old in PathState for new in PathState
                if new not in PATH_TRANSITIONS[old]]


@pytest.mark.parametrize(("old", "new"), ILLEGAL_PUNCH, ids=str)
def test_illegal_hole_punch_transitions(old: PunchState, new: PunchState) -> None:
    punch = HolePunch("alice", "bob", ("198.51.100.1", 1), TOKEN, 0.0)
    punch.state = old
    with pytest.raises(IllegalTransition):
        punch._transition(new)


@pytest.mark.parametrize(("old", "new"), ILLEGAL_PATH, ids=str)
def test_illegal_path_transitions(old: PathState, new: PathState) -> None:
    path = PathMonitor(("198.51.100.1", 1), TOKEN, 0.0)
    path.state = old
    with pytest.raises(IllegalTransition):
        path._transition(new)


def test_closing_twice_is_illegal() -> None:
    punch = HolePunch("alice", "bob", ("198.51.100.1", 1), TOKEN, 0.0)
    punch.close()
    with pytest.raises(IllegalTransition):
        punch.close()


PEER: Address = ("198.51.100.1", 40000)


def test_keepalives_every_15_s() -> None:
    path = PathMonitor(PEER, TOKEN, 100.0)
    assert path.get_timer() == 115.0
    assert path.datagrams_to_send(114.9) == []
    assert path.datagrams_to_send(115.0) == [(encode_frame(Keepalive(TOKEN)), PEER)]
    assert path.get_timer() == 130.0


def test_path_lost_after_silence_and_restored_by_a_valid_frame() -> None:
    path = PathMonitor(PEER, TOKEN, 100.0)
    path.receive_frame(Keepalive(TOKEN), PEER, 110.0)
    path.receive_frame(Keepalive(TOKEN), STRANGER, 120.0)  # refreshes nothing
    path.receive_frame(Keepalive(OTHER_TOKEN), PEER, 121.0)  # nor does a wrong token
    path.handle_timer(154.9)
    assert path.state is PathState.ALIVE
    path.handle_timer(155.0)
    path.receive_frame(Pong(3, TOKEN), PEER, 160.0)
    assert drain(path) == [PathLost(PEER, 45.0), PathRestored(PEER)]
    assert path.ignored == 2


def test_ping_tracker_answers_pings_and_matches_only_its_own_pongs() -> None:
    pings = PingTracker(PEER, TOKEN)
    pings.receive_frame(Ping(7, TOKEN), PEER, 1.0)
    pings.receive_frame(Ping(8, OTHER_TOKEN), PEER, 1.0)
    assert pings.datagrams_to_send(1.0) == [(encode_frame(Pong(7, TOKEN)), PEER)]
    ping_id = pings.send_ping(2.0)
    assert pings.datagrams_to_send(2.0) == [(encode_frame(Ping(ping_id, TOKEN)), PEER)]
    assert pings.get_timer() == 7.0
    pings.receive_frame(Pong(ping_id + 1, TOKEN), PEER, 2.1)  # never asked for
    pings.receive_frame(Pong(ping_id, TOKEN), STRANGER, 2.2)
    pings.receive_frame(Pong(ping_id, TOKEN), PEER, 2.5)
    pings.receive_frame(Pong(ping_id, TOKEN), PEER, 2.6)  # a duplicate
    assert drain(pings) == [PingResult(ping_id, 0.5)]
    assert pings.ignored == 4 and pings.get_timer() is None


def test_pings_in_flight_are_bounded() -> None:
    pings = PingTracker(PEER, TOKEN)
    for _ in range(MAX_PINGS_IN_FLIGHT):
        pings.send_ping(0.0)
    with pytest.raises(UsageError):
        pings.send_ping(0.0)


class Worker:
    """What the udp actor does once CONNECTED: decode each datagram once, feed every core."""

    def __init__(self, peer_addr: Address, now: float) -> None:
        self.path = PathMonitor(peer_addr, TOKEN, now)
        self.pings = PingTracker(peer_addr, TOKEN)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        frame = decode_frame(data)
        self.path.receive_frame(frame, addr, now)
        self.pings.receive_frame(frame, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return self.path.datagrams_to_send(now) + self.pings.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        return min((t for t in (self.path.get_timer(), self.pings.get_timer()) if t), default=None)

    def handle_timer(self, now: float) -> None:
        self.path.handle_timer(now)
        self.pings.handle_timer(now)


def connected(kind_a: NatKind, kind_b: NatKind) -> tuple[Pair, Worker, Worker]:
    p = pair(kind_a, kind_b)
    now = p.run(until=1.0)
    alice, bob = Worker(p.alice.peer_addr, now), Worker(p.bob.peer_addr, now)
    return p, alice, bob


def test_ping_over_the_punched_path_then_timeout_once_the_link_is_cut() -> None:
    p, alice, bob = connected(FULL, SYMMETRIC)
    start = p.run(until=1.0)
    first = alice.pings.send_ping(start)
    run(p.net, {p.a: alice, p.b: bob}, start, start + 1.0)
    p.net.up = False
    second = alice.pings.send_ping(start + 2.0)
    run(p.net, {p.a: alice, p.b: bob}, start + 2.0, start + 8.0)
    assert drain(alice.pings) == [PingResult(first, pytest.approx(2 * LATENCY)),
                                  PingTimedOut(second)]
    assert drain(bob.pings) == [] and bob.pings.ignored == alice.pings.ignored == 0


def test_keepalives_hold_the_path_through_the_nats_until_the_link_is_cut() -> None:
    p, alice, bob = connected(RESTRICTED, RESTRICTED)
    start = p.run(until=1.0)
    run(p.net, {p.a: alice, p.b: bob}, start, start + 120.0)
    assert drain(alice.path) == drain(bob.path) == []  # keepalives crossed both NATs
    p.net.up = False
    run(p.net, {p.a: alice, p.b: bob}, start + 120.0, start + 200.0)
    for worker in (alice, bob):
        assert [type(e) for e in drain(worker.path)] == [PathLost]
        assert worker.path.state is PathState.LOST


def test_a_late_offer_connects_one_round_trip_after_the_peer_hears_from_us() -> None:
    """Alice punched before bob knew of her (her first punch was lost); bob's first punch makes
    her punch again at once instead of waiting out her 50 ms interval."""
    alice = HolePunch("alice", "bob", ("198.51.100.1", 5000), TOKEN, 0.0)
    bob = HolePunch("bob", "alice", ("203.0.113.1", 5000), TOKEN, 0.010)
    alice.datagrams_to_send(0.0)  # lost: bob had no offer yet
    (punch, _), = bob.datagrams_to_send(0.010)
    alice.receive_datagram(punch, ("198.51.100.1", 5000), 0.015)
    sent = [decode_frame(d) for d, _ in alice.datagrams_to_send(0.015)]
    assert [type(f) for f in sent] == [PunchAck, Punch]  # not only the ack
    for frame in sent:
        bob.receive_frame(frame, ("203.0.113.1", 5000), 0.020)
    assert drain(bob) == [PunchSucceeded(("203.0.113.1", 5000), pytest.approx(0.010))]
    for data, _ in bob.datagrams_to_send(0.020):
        alice.receive_datagram(data, ("198.51.100.1", 5000), 0.025)
    assert drain(alice) == [PunchSucceeded(("198.51.100.1", 5000), pytest.approx(0.010))]


def linux_pair(skew: float, opening: float) -> Pair:
    """Two Linux MASQUERADE NATs; bob's offer arrives ``skew`` seconds after alice's."""
    net = Network(latency=LATENCY)
    a = net.add_host(("10.0.1.2", 8081), Nat("203.0.113.2", NatKind.CONNTRACK))
    b = net.add_host(("10.0.2.2", 8081), Nat("198.51.100.2", NatKind.CONNTRACK))
    a_public, b_public = net.stun_mapping(a), net.stun_mapping(b)
    alice = HolePunch("alice", "bob", b_public, TOKEN, 0.0, opening=opening)
    bob = HolePunch("bob", "alice", a_public, TOKEN, skew, opening=opening)
    return Pair(net, a, b, a_public, b_public, alice, bob)


def test_without_an_opening_the_first_punch_steals_the_peers_port_and_both_fail() -> None:
    p = linux_pair(skew=2 * LATENCY, opening=0.0)  # alice's punch is at NAT b first
    p.run(until=20.0)
    assert [type(e) for e in drain(p.alice) + drain(p.bob)] == [PunchFailed, PunchFailed]


@pytest.mark.parametrize("skew", [0.0, 0.002, 0.05, 0.09])
def test_opening_punches_survive_the_simultaneous_open_race(skew: float) -> None:
    p = linux_pair(skew=skew, opening=0.1)
    p.run(until=20.0)
    assert drain(p.alice) == [PunchSucceeded(p.b_public, pytest.approx(2 * LATENCY))]
    assert drain(p.bob) == [PunchSucceeded(p.a_public, pytest.approx(2 * LATENCY))]
    assert p.b_public[1] == p.a_public[1] == 8081  # every port kept


def test_opening_punches_leave_for_the_opening_then_full_punches() -> None:
    punch = HolePunch("alice", "bob", ("198.51.100.1", 40000), TOKEN, 0.0, interval=0.05,
                      opening=0.1)
    kinds = []
    while (timer := punch.get_timer()) is not None and timer < 0.2:
        punch.handle_timer(timer)
        kinds += [type(data).__name__ for data, _ in punch.datagrams_to_send(timer)]
    assert kinds == ["OpeningPunch", "OpeningPunch", "bytes", "bytes"]


def test_a_punch_from_the_peer_ends_the_opening_at_once() -> None:
    bob_addr: Address = ("198.51.100.1", 40000)
    punch = HolePunch("alice", "bob", bob_addr, TOKEN, 0.0, opening=1.0)
    assert all(isinstance(d, bytes) and type(d).__name__ == "OpeningPunch"
               for d, _ in punch.datagrams_to_send(0.0))
    punch.receive_frame(Punch(TOKEN, "bob", 1), bob_addr, 0.01)
    sent = punch.datagrams_to_send(0.01)
    assert [type(decode_frame(d)) for d, _ in sent] == [PunchAck, Punch]
    assert all(type(d) is bytes for d, _ in sent)


def test_an_ack_alone_connects_a_peer_that_no_longer_punches() -> None:
    bob_addr: Address = ("198.51.100.1", 40000)
    punch = HolePunch("alice", "bob", bob_addr, TOKEN, 0.0)
    [(data, _)] = punch.datagrams_to_send(0.0)
    frame = decode_frame(data)
    assert isinstance(frame, Punch)
    punch.receive_frame(PunchAck(TOKEN, frame.seq), bob_addr, 0.02)
    assert drain(punch) == [PunchSucceeded(bob_addr, pytest.approx(0.02))]
