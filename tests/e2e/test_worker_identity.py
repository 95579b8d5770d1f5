"""The worker's rendezvous_client (in a real tree) against the real rendezvous service: it proves
its key, so its id cannot be taken over; with out-of-band pins it refuses offers naming a peer
whose fingerprint is not pinned, even though the service vouched for it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.client import Client
from messages.worker import StatusRequest, StunResult
from protocol.certs import fingerprint, generate_self_signed
from tests.support.ctl_tree import start
from tests.support.processes import stop_tree, wait_until
from tests.support.rdv_tree import (
    Rendezvous,
    connect,
    new_identity,
    run,
    start_rendezvous,
    stop_rendezvous,
)

pytestmark = pytest.mark.timeout(90)

PINNED = new_identity()


@pytest.fixture(scope="module")
def rdv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rendezvous]:
    service = start_rendezvous(tmp_path_factory.mktemp("rdv"))
    yield service
    stop_rendezvous(service)


@pytest.fixture
def worker(tmp_path: Path, rdv: Rendezvous) -> Iterator[tuple[Client, str]]:
    cert, key = generate_self_signed("alice")
    config = {"worker_id": "alice", "rendezvous_url": f"ws://127.0.0.1:{rdv.http_port}",
              "fingerprint": fingerprint(cert), "cert_pem": cert.decode(),
              "key_pem": key.decode(), "ip_echo_url": "", "ping_interval": 5.0,
              "ping_timeout": 5.0, "peer_fingerprints": [fingerprint(PINNED[0])]}
    tree = start("rdv", tmp_path, config)
    client = Client(tree.rundir)
    client.tell("w/rendezvous_client", StunResult(True, "127.0.0.1", 40000, "x", ""))
    wait_until(lambda: client.ask("w/rendezvous_client", StatusRequest())["registered"], 10,
               "registration")
    yield client, fingerprint(cert)
    client.close()
    stop_tree(tree)


def offers(client: Client) -> list[dict[str, Any]]:
    return [m for m in client.ask("w/udp", StatusRequest())["seen"] if m["type"] == "PeerOffer"]


def test_the_worker_proves_its_key_and_keeps_its_id(worker: Any, rdv: Rendezvous) -> None:
    client, own = worker

    async def scenario() -> None:
        assert (await rdv.workers())["alice"]["cert_fingerprint"] == own
        thief = await connect(rdv, "alice")
        await thief.prove(new_identity())
        code, _ = await thief.closed_with()
        assert code == 4403
    run(scenario())
    assert client.ask("w/rendezvous_client", StatusRequest())["reconnects"] == 0


def test_an_unpinned_peer_is_refused_and_a_pinned_one_accepted(worker: Any,
                                                               rdv: Rendezvous) -> None:
    client, _ = worker

    async def scenario() -> None:
        stranger = await connect(rdv, "mallory", identity=new_identity())
        await stranger.endpoint(40100)
        await stranger.expect("p2p_connection_offer")  # paired with alice by the service
        await stranger.close()
        await stranger.ws.wait_closed()
        friend = await connect(rdv, "bob", identity=PINNED)
        await friend.endpoint(40101)
        await friend.expect("p2p_connection_offer")
        await asyncio.to_thread(wait_until, lambda: offers(client), 10, "bob's offer")
    run(scenario())
    assert [offer["peer_id"] for offer in offers(client)] == ["bob"]
    assert offers(client)[0]["peer_fingerprint"] == fingerprint(PINNED[0])
