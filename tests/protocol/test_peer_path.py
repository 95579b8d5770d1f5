"""The peer path (``protocol.udp.peer_path``): two paths in memory with a fake clock, the
original system's punches, resuming a saved path, and every illegal transition."""

from __future__ import annotations

import pytest

from messages.errors import IllegalTransition, UsageError
from protocol.stun import Address
from protocol.udp import decode_frame, decode_legacy
from protocol.udp.path import PingResult
from protocol.udp.peer_path import TRANSITIONS, PathChanged, PeerPath, PeerPathState

ADDR: dict[str, Address] = {"alice": ("127.0.0.1", 40001), "bob": ("127.0.0.1", 40002)}
TOKEN = bytes(range(16)).hex()
MAX_STEPS = 5000
S = PeerPathState


def run(paths: dict[str, PeerPath], now: float, until: float) -> float:
    for _ in range(MAX_STEPS):
        for name, other in (("alice", "bob"), ("bob", "alice")):
            for data, _ in paths[name].datagrams_to_send(now):
                paths[other].receive_frame(decode_frame(data), ADDR[name], now)
        timers = [t for p in paths.values() if (t := p.get_timer()) is not None]
        if not timers or min(timers) > until:
            return until
        now = max(now, min(timers))
        for path in paths.values():
            if (t := path.get_timer()) is not None and t <= now:
                path.handle_timer(now)
    raise AssertionError("run did not settle")


def events(path: PeerPath) -> list[object]:
    return list(iter(path.next_event, None))


def punched() -> dict[str, PeerPath]:
    paths = {name: PeerPath(name) for name in ADDR}
    paths["alice"].start("bob", ADDR["bob"], TOKEN, 0.0)
    paths["bob"].start("alice", ADDR["alice"], TOKEN, 0.0)
    run(paths, 0.0, until=0.5)
    return paths


def test_two_paths_punch_and_connect_from_both_sides() -> None:
    paths = punched()
    for path in paths.values():
        assert path.state is S.CONNECTED
        assert events(path) == [PathChanged(S.CONNECTED, "")]


def test_a_ping_is_answered_on_a_connected_path() -> None:
    paths = punched()
    events(paths["alice"])
    paths["alice"].send_ping(0.5)
    run(paths, 0.5, until=0.6)
    assert [type(e) for e in events(paths["alice"])] == [PingResult]


def test_a_silent_peer_fails_the_punch_at_its_deadline() -> None:
    path = PeerPath("alice", punch_deadline=1.0)
    path.start("bob", ADDR["bob"], TOKEN, 0.0)
    now = 0.0
    while path.state is S.PUNCHING:
        path.datagrams_to_send(now)
        now = path.get_timer() or now
        path.handle_timer(now)
    assert path.state is S.FAILED and "no answer from peer endpoint" in path.reason
    assert events(path) == [PathChanged(S.FAILED, path.reason)]


def test_a_peer_of_the_original_system_gets_three_text_punches_then_counts_as_up() -> None:
    path = PeerPath("alice")
    path.start("bob", ADDR["bob"], "", 0.0)
    sent, now = [], 0.0
    while (timer := path.get_timer()) is not None:
        now = timer
        path.handle_timer(now)
        sent += [(now, decode_legacy(data).number) for data, _ in path.datagrams_to_send(now)]
    assert [n for _, n in sent] == [1, 2, 3] and [t for t, _ in sent] == [0.0, 0.5, 1.0]
    assert path.state is S.CONNECTED and path.reason == "original-protocol peer: unverified"


def test_a_saved_connected_path_resumes_without_punching() -> None:
    paths = punched()
    saved = paths["alice"].saved()
    fresh = PeerPath("alice")
    assert fresh.resume("bob", ADDR["bob"], TOKEN, saved, 10.0)
    assert fresh.state is S.CONNECTED and fresh.punch is None and fresh.monitor is not None
    assert not fresh.resume("bob", ADDR["bob"], TOKEN, {"state": "nonsense"}, 10.0)


def test_a_ping_without_a_path_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        PeerPath("alice").send_ping(0.0)


def test_a_bad_token_fails_the_offer_at_once() -> None:
    path = PeerPath("alice")
    path.start("bob", ADDR["bob"], "zz", 0.0)
    assert path.state is S.FAILED and path.reason.startswith("unusable offer")


ILLEGAL = [(old, new) for old in S for new in S if new not in TRANSITIONS[old]]


@pytest.mark.parametrize(("old", "new"), ILLEGAL, ids=str)
def test_illegal_peer_path_transitions(old: PeerPathState, new: PeerPathState) -> None:
    path = PeerPath("alice")
    path.state = old
    with pytest.raises(IllegalTransition):
        path._transition(new, "")


def alone(path: PeerPath, now: float, until: float) -> tuple[float, int]:
    """Drives ``path`` with every datagram lost; returns the time and the datagrams sent."""
    sent = 0
    for _ in range(MAX_STEPS):
        sent += len(path.datagrams_to_send(now))
        timer = path.get_timer()
        if timer is None or timer > until:
            return now, sent
        now = max(now, timer)
        path.handle_timer(now)
    raise AssertionError("path did not settle")


def test_a_failed_punch_is_retried_after_silence_with_backoff_and_then_connects() -> None:
    paths = {name: PeerPath(name, punch_deadline=1.0) for name in ADDR}
    alice = paths["alice"]
    alice.start("bob", ADDR["bob"], TOKEN, 0.0)
    now, _ = alone(alice, 0.0, until=1.0)
    assert alice.state is S.FAILED and alice.reason.endswith("punching again in 35 s")
    now, sent = alone(alice, now, until=now + 34.9)
    assert sent == 0 and alice.state is S.FAILED  # silence, so the NATs forget stale flows
    now, _ = alone(alice, now, until=now + 36.1)
    assert alice.reason.endswith("punching again in 70 s")  # the retry failed too: backoff
    events(alice)
    now = alice.get_timer() or 0.0
    paths["bob"].start("alice", ADDR["alice"], TOKEN, now)  # as if both retried together
    run(paths, now, until=now + 2.0)
    assert [e.state for e in events(alice) if isinstance(e, PathChanged)] == [S.PUNCHING,
                                                                              S.CONNECTED]
    assert paths["bob"].state is S.CONNECTED


def test_a_lost_path_goes_quiet_then_both_punch_again_and_reconnect() -> None:
    paths = punched()
    for path in paths.values():
        now, _ = alone(path, 0.5, until=46.0)
        assert path.state is S.LOST and path.reason.endswith("punching again in 35 s")
        _, sent = alone(path, now, until=now + 34.9)
        assert sent == 0  # no keepalive keeps a stale NAT entry alive
    run(paths, now, until=now + 40.0)
    for path in paths.values():
        assert path.state is S.CONNECTED and path.retries == 0


def test_a_lost_path_is_punched_again_against_a_peer_that_stayed_connected() -> None:
    paths = punched()
    alice = paths["alice"]
    now, _ = alone(alice, 0.5, until=81.0)  # only alice heard nothing
    assert alice.state is S.PUNCHING
    run(paths, now, until=now + 2.0)
    assert alice.state is S.CONNECTED
