"""WorkerRegistry: records, listing, replacement of a reconnecting id, the cap, snapshots."""

from __future__ import annotations

import msgpack
import pytest

from messages.errors import DecodeError, IllegalTransition, PeerError, UsageError
from protocol.rendezvous.pairing import REASON_REPLACED, Candidate, PairingTable, PeerLeft
from protocol.rendezvous.registry import WorkerEvent, WorkerRegistry, WorkerState, next_state

FINGERPRINT = "cd" * 32


def connected(*worker_ids: str) -> WorkerRegistry:
    registry = WorkerRegistry()
    for number, worker_id in enumerate(worker_ids):
        registry.connect(worker_id, number, "127.0.0.1", 50000 + number, now=100.0 + number)
    return registry


def test_listing_has_the_original_fields_and_the_new_ones() -> None:
    registry = connected("w1")
    registry.update_public_ip("w1", 0, "203.0.113.7", FINGERPRINT)
    registry.update_endpoint("w1", 0, "198.51.100.2", 40001)
    assert registry.listing() == {"connected_workers_count": 1, "workers": {"w1": {
        "websocket_observed_ip": "127.0.0.1", "websocket_observed_port": 50000,
        "http_reported_public_ip": "203.0.113.7", "stun_reported_udp_ip": "198.51.100.2",
        "stun_reported_udp_port": 40001, "websocket_connected": True, "state": "ready",
        "cert_fingerprint": FINGERPRINT, "connected_since": 100.0, "paired_peer": None,
    }}}


def test_a_worker_becomes_a_candidate_only_with_an_endpoint() -> None:
    registry = connected("w1")
    assert registry.get("w1").candidate() is None
    registry.update_public_ip("w1", 0, "203.0.113.7")
    assert registry.get("w1").candidate() is None
    record = registry.update_endpoint("w1", 0, "198.51.100.2", 40001, FINGERPRINT)
    assert record.state is WorkerState.READY
    assert record.candidate() == Candidate("w1", "198.51.100.2", 40001, FINGERPRINT)
    record = registry.update_endpoint("w1", 0, "198.51.100.2", 40002)  # fingerprint kept
    assert record.candidate() == Candidate("w1", "198.51.100.2", 40002, FINGERPRINT)


def test_a_deregistered_worker_leaves_the_registry_at_once() -> None:
    registry = connected("w1")
    registry.update_endpoint("w1", 0, "198.51.100.2", 40001)
    record = registry.deregister("w1", 0)
    assert record.state is WorkerState.DEREGISTERED and record.candidate() is None
    assert len(registry) == 0 and "w1" not in registry.listing()["workers"]
    with pytest.raises(UsageError, match="no live connection"):
        registry.update_endpoint("w1", 0, "198.51.100.2", 40001)
    assert registry.disconnect("w1", 0) is None  # its close comes later: nothing left


@pytest.mark.parametrize("event", list(WorkerEvent))
def test_every_event_is_illegal_once_deregistered(event: WorkerEvent) -> None:
    with pytest.raises(IllegalTransition):
        next_state("w1", WorkerState.DEREGISTERED, event)


def test_a_reconnecting_id_replaces_the_stale_record() -> None:
    registry = connected("w1", "w2")
    registry.update_endpoint("w1", 0, "198.51.100.2", 40001)
    stale = registry.connect("w1", 7, "127.0.0.2", 50007, now=200.0)
    assert stale is not None and stale.connection_id == 0  # the caller closes connection 0
    record = registry.get("w1")
    assert (record.connection_id, record.state, record.udp_ip) == (7, WorkerState.CONNECTED, None)
    assert registry.disconnect("w1", 0) is None  # the stale connection's close changes nothing
    with pytest.raises(UsageError) as raised:
        registry.update_endpoint("w1", 0, "198.51.100.2", 40001)
    assert raised.value.code == "stale_connection"
    assert registry.get("w1").connection_id == 7 and len(registry) == 2


def test_replacement_tells_the_old_peer_through_pairing() -> None:
    registry, table = connected("w1", "w2"), PairingTable()
    for connection_id, worker_id in enumerate(("w1", "w2")):
        record = registry.update_endpoint(worker_id, connection_id, "192.0.2.1", 4000)
        registry.apply_pairing(table.worker_ready(record.candidate()))
    assert registry.get("w2").paired_peer == "w1"
    stale = registry.connect("w1", 9, "127.0.0.1", 50009, now=300.0)
    events = table.worker_gone(stale.worker_id, REASON_REPLACED)
    registry.apply_pairing(events)
    assert events[0] == PeerLeft("w1", "w2", "replaced", events[0].notice)
    assert events[0].notice.message["reason"] == "replaced"
    assert registry.get("w2").paired_peer is None and registry.get("w1").paired_peer is None


def test_the_cap_refuses_new_ids_but_not_reconnections() -> None:
    registry = WorkerRegistry(max_workers=2)
    registry.connect("w1", 0, "127.0.0.1", None, now=0.0)
    registry.connect("w2", 1, "127.0.0.1", None, now=0.0)
    with pytest.raises(PeerError) as raised:
        registry.connect("w3", 2, "127.0.0.1", None, now=0.0)
    assert raised.value.code == "registry_full" and "maximum of 2 workers" in raised.value.reason
    assert registry.connect("w2", 3, "127.0.0.1", None, now=1.0) is not None
    registry.disconnect("w1", 0)
    assert registry.connect("w3", 4, "127.0.0.1", None, now=2.0) is None


def test_connect_refuses_a_bad_worker_id() -> None:
    with pytest.raises(DecodeError):
        WorkerRegistry().connect("a/b", 0, "127.0.0.1", None, now=0.0)


def test_snapshot_survives_msgpack_and_restores_every_record() -> None:
    registry = connected("w1", "w2", "w3")
    registry.update_public_ip("w1", 0, "203.0.113.7", FINGERPRINT)
    registry.update_endpoint("w2", 1, "198.51.100.2", 40001)
    registry.apply_pairing(PairingTable().worker_ready(Candidate("w2", "192.0.2.1", 1)))
    wire_copy = msgpack.unpackb(msgpack.packb(registry.snapshot()))
    restored = WorkerRegistry.restore(wire_copy)
    assert restored.listing() == registry.listing()
    assert [restored.get(worker_id) for worker_id in ("w1", "w2", "w3")] == [
        registry.get(worker_id) for worker_id in ("w1", "w2", "w3")]
    assert restored.disconnect("w3", 2) is not None


def _record(**changes: object) -> dict:
    return connected("w1").snapshot()["workers"][0] | changes


@pytest.mark.parametrize("snapshot", [
    {},
    {"workers": [{"worker_id": "w1"}]},
    {"workers": [_record(state="flying")]},
    {"workers": [_record(connection_id="0")]},
    {"workers": [_record(udp_port=True)]},
    {"workers": [_record(worker_id="a b")]},
    {"workers": "nope"},
])
def test_restore_refuses_a_malformed_snapshot(snapshot: dict) -> None:
    with pytest.raises(DecodeError):
        WorkerRegistry.restore(snapshot)


def test_transitions_are_logged_old_to_new(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="protocol.rendezvous.registry")
    registry = connected("w1")
    registry.update_endpoint("w1", 0, "198.51.100.2", 40001)
    registry.disconnect("w1", 0)
    assert "worker w1: connected -> ready" in caplog.text
    assert "worker w1: ready -> closed" in caplog.text
