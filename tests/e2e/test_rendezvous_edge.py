"""The rendezvous service end to end: the real tree (uvicorn serving the Starlette edge, the
registry and pairing actors) and real ``websockets`` clients speaking the original JSON."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from protocol.certs import fingerprint
from tests.support.rdv_tree import (
    Rendezvous,
    Worker,
    connect,
    new_identity,
    run,
    start_rendezvous,
    stop_rendezvous,
)

pytestmark = pytest.mark.timeout(60)



@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rendezvous]:
    rdv = start_rendezvous(tmp_path_factory.mktemp("rdv"))
    yield rdv
    stop_rendezvous(rdv)


@pytest.fixture
def rdv(service: Rendezvous) -> Iterator[Rendezvous]:
    """The shared service, left with no worker after each test (so none is paired across)."""
    yield service
    run(until_empty(service))


async def until_empty(rdv: Rendezvous) -> None:
    while await rdv.workers():
        await asyncio.sleep(0.02)


async def ready_pair(rdv: Rendezvous, a: str, b: str) -> tuple[Worker, Worker]:
    first, second = await connect(rdv, a), await connect(rdv, b)
    await first.endpoint(40001)
    await second.endpoint(40002)
    await first.expect("p2p_connection_offer")
    await second.expect("p2p_connection_offer")
    return first, second


def test_registration_is_acknowledged_and_listed(rdv: Rendezvous) -> None:
    async def scenario() -> None:
        worker = await connect(rdv, "reg-1")
        await worker.send({"type": "register_public_ip", "ip": "198.51.100.7"})
        ack = await worker.endpoint(40000, "203.0.113.9")
        assert ack == {"type": "udp_endpoint_ack", "status": "success", "udp_ip": "203.0.113.9",
                       "udp_port": 40000}
        entry = (await rdv.workers())["reg-1"]
        assert entry["websocket_observed_ip"] == "127.0.0.1"
        assert entry["http_reported_public_ip"] == "198.51.100.7"
        assert (entry["stun_reported_udp_ip"], entry["stun_reported_udp_port"]) == \
            ("203.0.113.9", 40000)
        assert entry["websocket_connected"] and entry["paired_peer"] is None
        assert entry["state"] == "ready" and entry["connected_since"] > 0
        await worker.close()
    run(scenario())


def test_two_ready_workers_get_matching_offers(rdv: Rendezvous) -> None:
    async def scenario() -> None:
        cert, key = new_identity()
        a = await connect(rdv, "pair-a", identity=(cert, key))
        b = await connect(rdv, "pair-b")
        await a.send({"type": "register_public_ip", "ip": "198.51.100.1",
                      "cert_fingerprint": fingerprint(cert)})
        await a.endpoint(41000)
        assert await a.silent()  # alone: no offer yet
        await b.endpoint(41001, "127.0.0.2")
        offer_a, offer_b = await a.expect("p2p_connection_offer"), await b.expect(
            "p2p_connection_offer")
        assert (offer_a["peer_worker_id"], offer_a["peer_udp_ip"], offer_a["peer_udp_port"]) == \
            ("pair-b", "127.0.0.2", 41001)
        assert (offer_b["peer_worker_id"], offer_b["peer_udp_ip"], offer_b["peer_udp_port"]) == \
            ("pair-a", "127.0.0.1", 41000)
        assert {offer_a["quic_role"], offer_b["quic_role"]} == {"client", "server"}
        assert offer_a["quic_role"] == "client"  # "pair-a" sorts first
        assert offer_a["punch_token"] == offer_b["punch_token"]
        assert len(offer_a["punch_token"]) == 32
        assert offer_b["peer_cert_fingerprint"] == fingerprint(cert)  # proven
        assert offer_a["peer_cert_fingerprint"] is None  # b proved nothing
        listed = await rdv.workers()
        assert listed["pair-a"]["paired_peer"] == "pair-b"
        await a.close()
        await b.close()
    run(scenario())


def test_many_workers_are_paired_first_come_first_served(rdv: Rendezvous) -> None:
    async def scenario() -> None:
        workers = [await connect(rdv, f"many-{n}") for n in range(10)]
        for n, worker in enumerate(workers):
            await worker.endpoint(42000 + n)
        peers = {w.worker_id: (await w.expect("p2p_connection_offer"))["peer_worker_id"]
                 for w in workers}
        assert peers == {f"many-{n}": f"many-{n ^ 1}" for n in range(10)}
        for worker in workers:
            await worker.close()
    run(scenario())


def test_a_worker_without_endpoint_is_never_offered(rdv: Rendezvous) -> None:
    async def scenario() -> None:
        idle, a = await connect(rdv, "idle-1"), await connect(rdv, "idle-2")
        await idle.send({"type": "register_public_ip", "ip": "198.51.100.2"})
        await a.endpoint(43000)
        assert await idle.silent() and await a.silent()
        assert (await rdv.workers())["idle-1"]["state"] == "connected"
        await idle.close()
        await a.close()
    run(scenario())


def test_peer_disconnect_is_told_and_the_worker_is_paired_again(rdv: Rendezvous) -> None:
    async def scenario() -> None:
        a, b = await ready_pair(rdv, "left-a", "left-b")
        await b.close()
        notice = await a.expect("peer_disconnected")
        assert notice["peer_worker_id"] == "left-b" and notice["reason"] == "disconnected"
        c = await connect(rdv, "left-c")
        await c.endpoint(44000)
        assert (await a.expect("p2p_connection_offer"))["peer_worker_id"] == "left-c"
        assert (await c.expect("p2p_connection_offer"))["peer_worker_id"] == "left-a"
        await a.close()
        await c.close()
    run(scenario())


def test_explicit_deregister_frees_the_peer(rdv: Rendezvous) -> None:
    async def scenario() -> None:
        a, b = await ready_pair(rdv, "dereg-a", "dereg-b")
        await a.send({"type": "explicit_deregister"})
        notice = await b.expect("peer_disconnected")
        assert notice == {"type": "peer_disconnected", "peer_worker_id": "dereg-a",
                          "reason": "deregistered"}
        assert "dereg-a" not in await rdv.workers()  # gone from the listing, as the original
        await a.send({"type": "update_udp_endpoint", "udp_ip": "127.0.0.1", "udp_port": 1})
        refused = await a.expect("error")
        assert refused["code"] == "illegal_transition" and "deregistered" in refused["message"]
        c = await connect(rdv, "dereg-c")
        await c.endpoint(45000)
        assert (await b.expect("p2p_connection_offer"))["peer_worker_id"] == "dereg-c"
        assert await a.silent()
        for worker in (a, b, c):
            await worker.close()
    run(scenario())


def test_closed_connections_are_removed(rdv: Rendezvous) -> None:
    async def scenario() -> None:
        a, b = await connect(rdv, "gone-a"), await connect(rdv, "gone-b")
        await a.endpoint(46000)
        await a.close()
        await b.echo()  # b's connection is untouched
        await until_gone(rdv, "gone-a")
        assert "gone-b" in await rdv.workers()
        await b.close()
    run(scenario())


async def until_gone(rdv: Rendezvous, worker_id: str) -> None:
    while worker_id in await rdv.workers():
        await asyncio.sleep(0.02)


def test_a_duplicate_id_replaces_the_stale_connection(rdv: Rendezvous) -> None:
    async def scenario() -> None:
        a, peer = await ready_pair(rdv, "dup-a", "dup-peer")
        again = await connect(rdv, "dup-a")
        code, reason = await a.closed_with()
        assert code == 4409 and "replaced" in reason
        notice = await peer.expect("peer_disconnected")
        assert notice["peer_worker_id"] == "dup-a" and notice["reason"] == "replaced"
        await again.endpoint(47000)
        assert (await again.expect("p2p_connection_offer"))["peer_worker_id"] == "dup-peer"
        assert (await peer.expect("p2p_connection_offer"))["peer_worker_id"] == "dup-a"
        listed = await rdv.workers()
        assert listed["dup-a"]["websocket_observed_port"] == again.ws.local_address[1]
        await again.close()
        await peer.close()
    run(scenario())


def test_connect_request_pairs_two_named_workers(rdv: Rendezvous) -> None:
    async def scenario() -> None:
        a, b = await ready_pair(rdv, "cr-a", "cr-b")
        c, d = await ready_pair(rdv, "cr-c", "cr-d")
        await a.send({"type": "connect_request", "peer_worker_id": "cr-d"})
        assert (await a.expect("p2p_connection_offer"))["peer_worker_id"] == "cr-d"
        assert (await b.expect("peer_disconnected"))["reason"] == "repaired"
        assert (await c.expect("peer_disconnected"))["reason"] == "repaired"
        assert (await d.expect("p2p_connection_offer"))["peer_worker_id"] == "cr-a"
        assert (await b.expect("p2p_connection_offer"))["peer_worker_id"] == "cr-c"
        assert (await c.expect("p2p_connection_offer"))["peer_worker_id"] == "cr-b"
        await a.send({"type": "connect_request", "peer_worker_id": "nobody"})
        assert (await a.expect("error"))["code"] == "peer_unavailable"
        for worker in (a, b, c, d):
            await worker.close()
    run(scenario())


def test_echo_whoami_and_health(rdv: Rendezvous) -> None:
    async def scenario() -> None:
        worker = await connect(rdv, "echo-1")
        await worker.send({"type": "echo_request", "payload": {"n": [1, 2, 3]}})
        echoed = await worker.expect("echo_response")
        assert echoed["payload"] == echoed["original_payload"] == {"n": [1, 2, 3]}
        await worker.close()
    run(scenario())
    assert rdv.get("/whoami")["ip"] == "127.0.0.1"
    # X-Forwarded-For from a peer that is not a trusted proxy changes nothing.
    assert rdv.get("/whoami", {"X-Forwarded-For": "203.0.113.1"})["ip"] == "127.0.0.1"
    assert rdv.get("/health")["status"] == "ok"


BAD_INPUTS = {
    "not JSON": "hello",
    "JSON but not an object": "[1, 2]",
    "no type": json.dumps({"udp_ip": "127.0.0.1"}),
    "unknown type": json.dumps({"type": "teleport"}),
    "missing field": json.dumps({"type": "update_udp_endpoint", "udp_ip": "127.0.0.1"}),
    "port as text": json.dumps({"type": "update_udp_endpoint", "udp_ip": "127.0.0.1",
                                "udp_port": "4000"}),
    "port out of range": json.dumps({"type": "update_udp_endpoint", "udp_ip": "127.0.0.1",
                                     "udp_port": 70000}),
    "port as bool": json.dumps({"type": "update_udp_endpoint", "udp_ip": "127.0.0.1",
                                "udp_port": True}),
    "invalid IP": json.dumps({"type": "update_udp_endpoint", "udp_ip": "300.1.1.1",
                              "udp_port": 4000}),
    "invalid public IP": json.dumps({"type": "register_public_ip", "ip": "localhost"}),
    "bad fingerprint": json.dumps({"type": "register_public_ip", "ip": "198.51.100.1",
                                   "cert_fingerprint": "xyz"}),
    "bad peer id": json.dumps({"type": "connect_request", "peer_worker_id": "a/b"}),
    "frame over 8 KiB": json.dumps({"type": "echo_request", "payload": "x" * 9000}),
    "binary not UTF-8": b"\xff\xfe",
}


@pytest.mark.parametrize("frame", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_gets_an_error_and_the_connection_stays(rdv: Rendezvous,
                                                         frame: str | bytes) -> None:
    async def scenario() -> None:
        worker = await connect(rdv, "bad-1")
        await worker.endpoint(48000)
        await worker.send(frame)
        error = await worker.expect("error")
        assert set(error) == {"type", "message", "code"} and error["message"]
        await worker.echo()
        entry = (await rdv.workers())["bad-1"]
        assert (entry["state"], entry["stun_reported_udp_port"]) == ("ready", 48000)
        await worker.close()
    run(scenario())


def test_a_binary_frame_of_valid_json_is_understood(rdv: Rendezvous) -> None:
    async def scenario() -> None:
        worker = await connect(rdv, "bin-1")
        await worker.send(json.dumps({"type": "echo_request", "payload": 7}).encode())
        assert (await worker.expect("echo_response"))["payload"] == 7
        await worker.close()
    run(scenario())


@pytest.mark.parametrize("worker_id", ["a.b", "x" * 65, "sp%20ace"])
def test_an_invalid_worker_id_is_refused_with_4400(rdv: Rendezvous, worker_id: str) -> None:
    async def scenario() -> None:
        worker = await connect(rdv, worker_id)
        code, reason = await worker.closed_with()
        assert code == 4400 and "worker id" in reason
    run(scenario())


def test_a_frame_over_64_kib_closes_with_1009(rdv: Rendezvous) -> None:
    async def scenario() -> None:
        worker = await connect(rdv, "huge-1", max_size=None)
        await worker.send("x" * (65 * 1024))
        code, _ = await worker.closed_with()
        assert code == 1009
    run(scenario())


def test_a_flood_is_refused_past_the_rate_limit(rdv: Rendezvous) -> None:
    async def scenario() -> None:
        worker = await connect(rdv, "flood-1")
        for n in range(60):
            await worker.send({"type": "echo_request", "payload": n})
        replies = [await worker.recv() for _ in range(60)]
        kinds = [r["type"] for r in replies]
        assert kinds[:40] == ["echo_response"] * 40  # the burst
        assert kinds.count("error") >= 15
        assert all(r["code"] == "rate_limited" for r in replies if r["type"] == "error")
        await asyncio.sleep(0.2)  # the bucket refills at 20 per second
        await worker.echo()
        await worker.close()
    run(scenario())


# --- a service with a token, a worker cap and a trusted proxy -----------------------------------
@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rendezvous]:
    rdv = start_rendezvous(tmp_path_factory.mktemp("guarded"), "--token", "s3cret",
                           "--max-workers", "3", "--trusted-proxy", "127.0.0.0/8")
    yield rdv
    stop_rendezvous(rdv)


def test_a_missing_or_wrong_token_is_refused_with_4401(guarded: Rendezvous) -> None:
    async def scenario() -> None:
        for query in ("", "?token=wrong"):
            worker = await connect(guarded, "tok-1", query)
            code, reason = await worker.closed_with()
            assert code == 4401 and "token" in reason
        by_query = await connect(guarded, "tok-1", "?token=s3cret")
        await by_query.echo()
        await by_query.close()
        by_header = await connect(guarded, "tok-2",
                                  additional_headers={"Authorization": "Bearer s3cret"})
        await by_header.echo()
        await by_header.close()
    run(scenario())


def test_the_worker_cap_refuses_with_1013(guarded: Rendezvous) -> None:
    async def scenario() -> None:
        workers = [await connect(guarded, f"cap-{n}", "?token=s3cret") for n in range(3)]
        for worker in workers:
            await worker.echo()
        extra = await connect(guarded, "cap-x", "?token=s3cret")
        code, reason = await extra.closed_with()
        assert code == 1013 and "maximum of 3" in reason
        await workers[0].close()
        await until_gone(guarded, "cap-0")
        admitted = await connect(guarded, "cap-y", "?token=s3cret")
        await admitted.echo()
        for worker in (*workers[1:], admitted):
            await worker.close()
        await until_empty(guarded)
    run(scenario())


def test_x_forwarded_for_counts_from_a_trusted_proxy(guarded: Rendezvous) -> None:
    forwarded = {"X-Forwarded-For": "203.0.113.1, 127.0.0.9"}
    assert guarded.get("/whoami", forwarded)["ip"] == "203.0.113.1"
    assert guarded.get("/whoami", {"X-Forwarded-For": "not-an-ip"})["ip"] == "127.0.0.1"

    async def scenario() -> None:
        worker = await connect(guarded, "xff-1", "?token=s3cret",
                               additional_headers={"X-Forwarded-For": "198.51.100.77"})
        await worker.echo()
        assert (await guarded.workers())["xff-1"]["websocket_observed_ip"] == "198.51.100.77"
        await worker.close()
        await until_empty(guarded)
    run(scenario())
