"""The rendezvous service against an attacker: the real tree (uvicorn, registry, pairing) and
real ``websockets`` clients. Worker-id takeover, how an id is released, the deaf-session frame,
the listing's token, slowloris and per-address caps, bad ids' close code."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.error
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from protocol.certs import fingerprint
from tests.support.processes import wait_until, within
from tests.support.rdv_tree import (
    Rendezvous,
    Worker,
    connect,
    new_identity,
    run,
    start_rendezvous,
    stop_rendezvous,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def rdv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rendezvous]:
    # a short grace, so that the release after a disconnect can be seen within a test
    service = start_rendezvous(tmp_path_factory.mktemp("rdv"), "--tune", "identity_grace=1.0",
                               "--tune", "header_timeout=1.0", "--tune", "per_address=40")
    yield service
    stop_rendezvous(service)


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rendezvous]:
    service = start_rendezvous(tmp_path_factory.mktemp("strict"), "--no-unproven",
                               "--tune", "identity_window=1.0", "--token", "s3cret",
                               "--admin-token", "adm1n")
    yield service
    stop_rendezvous(service)


async def proven_pair(rdv: Rendezvous, a: str, b: str) -> tuple[Worker, Worker, bytes]:
    identity = new_identity()
    victim = await connect(rdv, a, identity=identity)
    peer = await connect(rdv, b)
    await victim.endpoint(40001)
    await peer.endpoint(40002)
    await victim.expect("p2p_connection_offer")
    offer = await peer.expect("p2p_connection_offer")
    assert offer["peer_cert_fingerprint"] == fingerprint(identity[0])
    return victim, peer, identity[0]


async def refused(worker: Worker) -> str:
    code, reason = await worker.closed_with()
    assert code == 4403, (code, reason)
    return reason


def test_a_takeover_without_the_key_is_refused_and_the_victim_untouched(
        rdv: Rendezvous) -> None:
    async def scenario() -> None:
        victim, peer, cert = await proven_pair(rdv, "take-v", "take-p")
        unproven = await connect(rdv, "take-v")  # knows the id, has no key
        await unproven.send({"type": "update_udp_endpoint", "udp_ip": "127.0.0.9",
                             "udp_port": 50000})
        assert "identity_proof" in await refused(unproven)
        stranger = await connect(rdv, "take-v")  # proves a key of its own
        await stranger.prove(new_identity())
        assert "another key" in await refused(stranger)
        assert await peer.silent() and await victim.silent()  # no peer_disconnected, no offer
        await victim.echo()
        entry = (await rdv.workers())["take-v"]
        assert entry["cert_fingerprint"] == fingerprint(cert)
        assert entry["stun_reported_udp_port"] == 40001 and entry["paired_peer"] == "take-p"
    run(scenario())


def test_the_same_key_replaces_its_own_connection(rdv: Rendezvous) -> None:
    async def scenario() -> None:
        identity = new_identity()
        victim = await connect(rdv, "same-v", identity=identity)
        peer = await connect(rdv, "same-p")
        await victim.endpoint(40001)
        await peer.endpoint(40002)
        await victim.expect("p2p_connection_offer")
        await peer.expect("p2p_connection_offer")
        again = await connect(rdv, "same-v", identity=identity)
        assert (await victim.closed_with())[0] == 4409
        assert (await peer.expect("peer_disconnected"))["reason"] == "replaced"
        await again.endpoint(40003)
        offer = await peer.expect("p2p_connection_offer")
        assert offer["peer_cert_fingerprint"] == fingerprint(identity[0])
    run(scenario())


def test_deregister_releases_the_id_at_once(rdv: Rendezvous) -> None:
    async def scenario() -> None:
        owner = await connect(rdv, "rel-d", identity=new_identity())
        await owner.endpoint(40010)
        await owner.send({"type": "explicit_deregister"})
        while "rel-d" in await rdv.workers():
            await asyncio.sleep(0.02)
        assert json.loads(await asyncio.to_thread(_get, rdv, "/health"))[
            "connected_workers"] == 0
        successor = await connect(rdv, "rel-d", identity=new_identity())
        await successor.echo()
    run(scenario())


def test_a_disconnect_releases_the_id_after_the_grace_period(rdv: Rendezvous) -> None:
    async def scenario() -> None:
        owner = await connect(rdv, "rel-g", identity=new_identity())
        await owner.close()
        early = await connect(rdv, "rel-g")
        await early.prove(new_identity())
        await refused(early)  # within the grace period the id is still the owner's
        deadline = time.monotonic() + within(10)
        while time.monotonic() < deadline:  # the grace is 1 s here: retry until it is over
            late = await connect(rdv, "rel-g")
            await late.prove(new_identity())
            try:
                reply = await asyncio.wait_for(late.ws.recv(), within(5))
            except ConnectionClosed:
                assert late.ws.close_code == 4403
                await asyncio.sleep(0.1)
                continue
            assert json.loads(reply)["type"] == "identity_accepted"
            return
        raise AssertionError("the id was never released")
    run(scenario())


def test_an_original_worker_without_a_key_works_when_unproven_ids_are_allowed(
        rdv: Rendezvous) -> None:
    async def scenario() -> None:
        a, b = await connect(rdv, "orig-a"), await connect(rdv, "orig-b")
        assert (await a.endpoint(40020))["status"] == "success"
        await b.endpoint(40021)
        offer = await a.expect("p2p_connection_offer")
        assert offer["peer_worker_id"] == "orig-b" and offer["peer_cert_fingerprint"] is None
        await b.expect("p2p_connection_offer")
    run(scenario())


def test_without_unproven_ids_a_keyless_or_silent_worker_is_refused(strict: Rendezvous) -> None:
    async def scenario() -> None:
        keyless = await connect(strict, "strict-a", "?token=s3cret")
        await keyless.send({"type": "register_public_ip", "ip": "198.51.100.1"})
        await refused(keyless)
        silent = await connect(strict, "strict-b", "?token=s3cret")
        await refused(silent)  # nothing within the identity window (1 s here)
        forged = await connect(strict, "strict-c", "?token=s3cret")
        await forged.prove(new_identity(), worker_id="someone-else")  # signed for another id
        assert "proof failed" in await refused(forged)
        good = await connect(strict, "strict-d", "?token=s3cret", identity=new_identity())
        assert (await good.endpoint(40030))["status"] == "success"
    run(scenario())


def _get(rdv: Rendezvous, path: str, headers: dict[str, str] | None = None) -> str:
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{rdv.http_port}{path}",
                                     headers=headers or {})
    with urllib.request.urlopen(request, timeout=within(5)) as response:
        return response.read().decode()


def test_list_workers_needs_the_token_or_the_admin_token(strict: Rendezvous) -> None:
    with pytest.raises(urllib.error.HTTPError) as denied:
        _get(strict, "/debug/list_workers")
    assert denied.value.code == 401
    assert "workers" in json.loads(_get(strict, "/debug/list_workers?token=s3cret"))
    admin = json.loads(_get(strict, "/debug/list_workers", {"Authorization": "Bearer adm1n"}))
    assert admin["connected_workers_count"] >= 0


def test_list_workers_pages(rdv: Rendezvous) -> None:
    async def scenario() -> None:
        for n in range(5):
            await connect(rdv, f"page-{n}")
        while len(await rdv.workers()) < 5:
            await asyncio.sleep(0.02)
        first = json.loads(await asyncio.to_thread(_get, rdv, "/debug/list_workers?limit=2"))
        rest = json.loads(await asyncio.to_thread(
            _get, rdv, "/debug/list_workers?offset=2&limit=100"))
        assert len(first["workers"]) == 2 and first["more"] and not rest["more"]
        assert first["connected_workers_count"] == 5
        assert set(first["workers"]) | set(rest["workers"]) == {f"page-{n}" for n in range(5)}
    run(scenario())


@pytest.mark.parametrize("path", ["", "a/b", "x" * 65])
def test_a_bad_worker_id_gets_the_documented_close_code(rdv: Rendezvous, path: str) -> None:
    async def scenario() -> None:
        worker = await connect(rdv, path)
        code, _ = await worker.closed_with()
        assert code == 4400
    run(scenario())


def test_a_lone_surrogate_gets_an_error_and_the_worker_stays_reachable(rdv: Rendezvous) -> None:
    async def scenario() -> None:
        a, b = await connect(rdv, "deaf-a"), await connect(rdv, "deaf-b")
        await a.send('{"type":"echo_request","payload":"\\ud800"}')
        assert "surrogate" in (await a.expect("error"))["message"]
        await a.endpoint(40040)
        await b.endpoint(40041)
        assert (await a.expect("p2p_connection_offer"))["peer_worker_id"] == "deaf-b"
        assert (await b.expect("p2p_connection_offer"))["peer_worker_id"] == "deaf-a"
    run(scenario())


def test_half_sent_requests_are_closed_after_the_header_timeout(rdv: Rendezvous) -> None:
    socks = [socket.create_connection(("127.0.0.1", rdv.http_port), timeout=within(10))
             for _ in range(5)]
    try:
        for sock in socks:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finished
        for sock in socks:
            assert sock.recv(1024) == b""  # closed by the service (1 s here), not by us
    finally:
        for sock in socks:
            sock.close()
    assert json.loads(_get(rdv, "/health"))["status"] == "ok"


def test_one_address_cannot_hold_more_than_its_share(rdv: Rendezvous) -> None:
    socks = [socket.create_connection(("127.0.0.1", rdv.http_port), timeout=within(10))
             for _ in range(40)]
    try:
        extra = socket.create_connection(("127.0.0.1", rdv.http_port), timeout=within(10))
        try:
            extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert extra.recv(1024) == b""  # over the cap of 40: closed at once
        except ConnectionResetError:
            pass  # closed at once (aborted)
        finally:
            extra.close()
    finally:
        for sock in socks:
            sock.close()
    # The slots come back as the service sees the closes.
    wait_until(lambda: _healthy(rdv), 10, "the address to get its slots back")


def _healthy(rdv: Rendezvous) -> bool:
    try:
        return json.loads(_get(rdv, "/health"))["status"] == "ok"
    except (urllib.error.URLError, ConnectionError):
        return False


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)
TYPES = st.sampled_from(["echo_request", "register_public_ip", "update_udp_endpoint",
                         "connect_request", "identity_proof", "explicit_deregister", "x"])
FRAMES = JSON | st.builds(lambda kind, fields: {**fields, "type": kind}, TYPES,
                          st.dictionaries(st.sampled_from(
                              ["payload", "ip", "udp_ip", "udp_port", "peer_worker_id",
                               "certificate", "signature", "cert_fingerprint"]), JSON))


def valid_frame(text: str | bytes) -> dict[str, object]:
    assert isinstance(text, str) and text.encode("utf-8")
    message = json.loads(text)
    assert isinstance(message, dict) and isinstance(message.get("type"), str)
    return message


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=FRAMES, surrogate=st.booleans())
def test_any_json_value_gets_an_error_or_valid_frames_never_silence(
        rdv: Rendezvous, value: object, surrogate: bool) -> None:
    """Whatever JSON a client sends, every receiver (it and its peer) gets valid frames, and
    it answers an echo afterwards (or was told why it was closed)."""
    text = json.dumps(value)
    if surrogate:
        text = text.replace('"', '"\\ud800', 1) if '"' in text else text

    async def scenario() -> None:
        peer = await connect(rdv, "fz-peer")
        await peer.endpoint(40050)
        sender = await connect(rdv, "fz-send")
        await sender.endpoint(40051)
        await sender.send(text)
        await sender.send({"type": "echo_request", "payload": "probe"})
        while True:  # until the probe's echo: every frame before it must be valid
            try:
                message = valid_frame(await asyncio.wait_for(sender.ws.recv(), within(5)))
            except Exception:
                code = sender.ws.close_code
                assert code in (4403, 4409), f"silent or broken connection ({code})"
                break
            if message["type"] == "echo_response" and message["payload"] == "probe":
                break
        await sender.close()
        await peer.send({"type": "echo_request", "payload": "probe"})
        while (message := valid_frame(await asyncio.wait_for(peer.ws.recv(), within(5))))[
                "type"] != "echo_response":
            pass
        await peer.close()
        while set(await rdv.workers()) & {"fz-peer", "fz-send"}:
            await asyncio.sleep(0.01)
    run(scenario())
