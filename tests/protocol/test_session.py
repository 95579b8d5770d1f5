"""The tunnel session (``protocol.tunnel.session``): two sessions in memory with a fake clock,
the reconnect rules on the session's own timer, and every illegal transition."""

from __future__ import annotations

import pytest

from messages.errors import IllegalTransition
from protocol import certs
from protocol.stun import Address
from protocol.tunnel.session import (
    BACKOFF_FIRST,
    TRANSITIONS,
    Peer,
    SessionChanged,
    SessionState,
    TunnelSession,
)
from protocol.udp.peer_path import PeerPathState

ADDR: dict[str, Address] = {"alice": ("127.0.0.1", 40001), "bob": ("127.0.0.1", 40002)}
MAX_STEPS = 5000


@pytest.fixture(scope="module")
def ids() -> dict[str, tuple[bytes, bytes]]:
    return {name: certs.generate_self_signed(name) for name in ("alice", "bob")}


def pair(ids, now: float = 0.0) -> dict[str, TunnelSession]:
    """alice (the designated client) and bob, offered to each other, the path connected."""
    sessions = {name: TunnelSession(*ids[name]) for name in ("alice", "bob")}
    for name, other, role in (("alice", "bob", "client"), ("bob", "alice", "server")):
        sessions[name].offer(Peer(other, role, certs.fingerprint(ids[other][0])), now)
    for name, other in (("bob", "alice"), ("alice", "bob")):
        sessions[name].path_changed(PeerPathState.CONNECTED, ADDR[other], "", now)
    return sessions


def run(sessions: dict[str, TunnelSession], now: float, until: float,
        cut: bool = False) -> float:
    """Deliver datagrams (none if ``cut``) and fire timers on a fake clock up to ``until``."""
    for _ in range(MAX_STEPS):
        moved = True
        while moved:
            moved = False
            for name, other in (("alice", "bob"), ("bob", "alice")):
                for data, _ in sessions[name].datagrams_to_send(now):
                    moved = not cut
                    if not cut:
                        sessions[other].receive_datagram(data, ADDR[name], now)
        timers = [t for s in sessions.values() if (t := s.get_timer()) is not None]
        if not timers or min(timers) > until:
            return until
        now = max(now, min(timers))
        for session in sessions.values():
            if (t := session.get_timer()) is not None and t <= now:
                session.handle_timer(now)
    raise AssertionError("run did not settle")


def states(session: TunnelSession) -> list[SessionState]:
    return [e.state for e in iter(session.next_event, None) if isinstance(e, SessionChanged)]


def test_the_client_connects_once_the_path_is_up_and_both_sides_see_it_up(ids) -> None:
    sessions = pair(ids)
    run(sessions, 0.0, until=1.0)
    assert states(sessions["alice"]) == [SessionState.CONNECTING, SessionState.UP]
    assert states(sessions["bob"]) == [SessionState.CONNECTING, SessionState.CONNECTING,
                                       SessionState.UP]  # waiting, then the peer's Initial


def test_a_restarted_server_reconnects_as_client_and_the_peer_answers(ids) -> None:
    sessions = pair(ids)
    run(sessions, 0.0, until=1.0)
    fresh = TunnelSession(*ids["bob"])
    fresh.restore(Peer("alice", "server", certs.fingerprint(ids["alice"][0])), ADDR["alice"],
                  sessions["bob"].outbox, sessions["bob"].inbox)
    sessions["bob"] = fresh
    fresh.recover(1.0)
    run(sessions, 1.0, until=2.0)
    assert states(fresh) == [SessionState.CONNECTING, SessionState.UP]
    assert sessions["alice"].tunnel is not None and sessions["alice"].tunnel.role == "server"


def test_the_client_reconnects_after_the_tunnel_goes_down_then_backs_off(ids) -> None:
    sessions = pair(ids)
    run(sessions, 0.0, until=1.0)
    alice = sessions["alice"]
    states(alice)
    sessions["bob"].close("bob closes", 1.0)
    run(sessions, 1.0, until=2.0)
    assert states(alice) == [SessionState.DOWN, SessionState.CONNECTING, SessionState.UP]
    assert alice.backoff == BACKOFF_FIRST  # an UP tunnel starts the backoff afresh
    run(sessions, 2.0, until=120.0, cut=True)  # nothing gets through: idle, then setup timeouts
    assert states(alice)[:3] == [SessionState.DOWN, SessionState.CONNECTING, SessionState.DOWN]
    assert alice.backoff > 2 * BACKOFF_FIRST


def test_a_lost_path_stops_reconnecting_and_a_failed_one_closes(ids) -> None:
    sessions = pair(ids)
    run(sessions, 0.0, until=1.0)
    alice = sessions["alice"]
    alice.path_changed(PeerPathState.FAILED, ADDR["bob"], "deadline", 1.0)
    run(sessions, 1.0, until=5.0)
    assert alice.state is SessionState.DOWN and alice.retry_at is None


def test_no_fingerprint_means_no_tunnel(ids) -> None:
    session = TunnelSession(*ids["alice"])
    session.offer(Peer("bob", "client", None), 0.0)
    session.path_changed(PeerPathState.CONNECTED, ADDR["bob"], "", 0.0)
    assert session.state is SessionState.DOWN and session.tunnel is None
    assert "unauthenticated" in session.reason


ILLEGAL = [(old, new) for old in SessionState for new in SessionState
           if new not in TRANSITIONS[old]]


@pytest.mark.parametrize(("old", "new"), ILLEGAL, ids=str)
def test_illegal_session_transitions(ids, old: SessionState, new: SessionState) -> None:
    session = TunnelSession(*ids["alice"])
    session.state = old
    with pytest.raises(IllegalTransition):
        session._transition(new, "")
