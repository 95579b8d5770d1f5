"""The rendezvous_client actor in a real tree, against a WebSocket server speaking the original
JSON protocol on loopback: the registration sequence and its token, offers delivered to udp and
quic, re-registration after the server restarts, explicit_deregister on a graceful stop. Then
the pure parts: backoff, derived tokens, and hostile offers (an Offer or DecodeError)."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from actors.client import Client
from actors.worker.rendezvous_client import BACKOFF_CAP, reconnect_delay
from messages.errors import DecodeError
from messages.worker import StatusRequest, StunResult
from protocol.certs import fingerprint, generate_self_signed
from protocol.rendezvous.client_wire import (
    Offer,
    derived_punch_token,
    offer_from_json,
    server_message,
)
from tests.support.ctl_tree import start
from tests.support.processes import stop_tree, wait_until, within

pytestmark = pytest.mark.timeout(60)

FINGERPRINT = "ab" * 32
PEER_FINGERPRINT = "cd" * 32
TOKEN = "0123456789abcdef" * 2


class FakeRendezvous:
    """The original service's side of /ws/register/{id} and /whoami, in a thread of its own.
    ``received`` holds (connection number, message) for everything workers sent."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.received: list[tuple[int, dict[str, Any]]] = []
        self.connections: list[dict[str, Any]] = []
        self.current: ServerConnection | None = None
        self.server: Server | None = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(within(5))

    def start(self) -> None:
        async def begin() -> None:
            self.server = await serve(self.worker, "127.0.0.1", self.port,
                                      process_request=self.whoami)

        self.run(begin())

    def stop(self) -> None:
        async def end() -> None:
            assert self.server is not None
            self.server.close()
            await self.server.wait_closed()

        self.run(end())

    def send(self, message: dict[str, Any] | str) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        assert self.current is not None
        self.run(self.current.send(text))

    def whoami(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/whoami":
            return connection.respond(200, json.dumps({"ip": "127.0.0.1", "port": 1}))
        return None

    async def worker(self, ws: ServerConnection) -> None:
        number = len(self.connections)
        assert ws.request is not None
        self.connections.append({"path": ws.request.path,
                                 "authorization": ws.request.headers.get("Authorization")})
        self.current = ws
        async for text in ws:
            message = json.loads(text)
            self.received.append((number, message))
            if message["type"] == "update_udp_endpoint":
                await ws.send(json.dumps({"type": "udp_endpoint_ack", "status": "success"}))

    def types(self, connection: int) -> list[str]:
        return [m["type"] for n, m in self.received if n == connection]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(within(5))


@pytest.fixture
def rendezvous() -> Iterator[FakeRendezvous]:
    server = FakeRendezvous()
    server.start()
    yield server
    server.stop()
    server.close()


@pytest.fixture
def worker(tmp_path: Path, rendezvous: FakeRendezvous) -> Iterator[Any]:
    config = {"worker_id": "alice", "rendezvous_url": f"ws://127.0.0.1:{rendezvous.port}",
              "token": "s3cret", "fingerprint": FINGERPRINT, "ip_echo_url": "",
              "ping_interval": 1.0, "ping_timeout": 1.0}
    tree = start("rdv", tmp_path, config)
    client = Client(tree.rundir)
    yield tree, client
    client.close()
    if tree.proc.poll() is None:
        stop_tree(tree)


def seen(client: Client, path: str, kind: str) -> list[dict[str, Any]]:
    return [m for m in client.ask(path, StatusRequest())["seen"] if m["type"] == kind]


def status(client: Client) -> dict[str, Any]:
    return client.ask("w/rendezvous_client", StatusRequest())


def registered(client: Client, rendezvous: FakeRendezvous, connection: int = 0) -> None:
    client.tell("w/rendezvous_client", StunResult(True, "127.0.0.1", 40000, "x", ""))
    wait_until(lambda: rendezvous.types(connection)[-1:] == ["update_udp_endpoint"], 10,
               "update_udp_endpoint")
    wait_until(lambda: status(client)["registered"], 10, "the ack")


def test_registers_in_order_with_the_token(worker: Any, rendezvous: FakeRendezvous) -> None:
    _, client = worker
    registered(client, rendezvous)
    assert rendezvous.connections == [{"path": "/ws/register/alice?token=s3cret",
                                       "authorization": "Bearer s3cret"}]
    assert [m for _, m in rendezvous.received] == [
        {"type": "register_public_ip", "ip": "127.0.0.1", "cert_fingerprint": FINGERPRINT},
        {"type": "update_udp_endpoint", "udp_ip": "127.0.0.1", "udp_port": 40000,
         "cert_fingerprint": FINGERPRINT}]
    # The same mapping again is not news; a changed one is (tells arrive in order).
    client.tell("w/rendezvous_client", StunResult(True, "127.0.0.1", 40000, "y", ""))
    client.tell("w/rendezvous_client", StunResult(True, "127.0.0.1", 40001, "y", ""))
    wait_until(lambda: len(rendezvous.received) == 3, 10, "the changed endpoint")
    assert rendezvous.received[2][1]["udp_port"] == 40001
    assert status(client)["endpoint"] == ["127.0.0.1", 40001]


def test_offers_reach_udp_and_quic_and_bad_ones_are_ignored(
        worker: Any, rendezvous: FakeRendezvous) -> None:
    _, client = worker
    registered(client, rendezvous)
    rendezvous.send("not json")
    rendezvous.send({"type": "p2p_connection_offer", "peer_worker_id": "bob",
                     "peer_udp_ip": "not an ip", "peer_udp_port": 1})
    rendezvous.send({"type": "p2p_connection_offer", "peer_worker_id": "bob",
                     "peer_udp_ip": "127.0.0.1", "peer_udp_port": 40002, "quic_role": "server",
                     "peer_cert_fingerprint": PEER_FINGERPRINT, "punch_token": TOKEN})
    offer = {"type": "PeerOffer", "peer_id": "bob", "host": "127.0.0.1", "port": 40002,
             "quic_role": "server", "peer_fingerprint": PEER_FINGERPRINT, "punch_token": TOKEN}
    for path in ("w/udp", "w/quic"):
        wait_until(lambda p=path: seen(client, p, "PeerOffer"), 10, f"the offer at {path}")
        assert seen(client, path, "PeerOffer") == [offer]
    assert status(client)["last_offer"] == {k: v for k, v in offer.items() if k != "type"}
    # An original service's offer: no role, token or fingerprint; both sides derive the same.
    rendezvous.send({"type": "p2p_connection_offer", "peer_worker_id": "bob",
                     "peer_udp_ip": "127.0.0.1", "peer_udp_port": 40003})
    rendezvous.send({"type": "peer_disconnected", "peer_worker_id": "bob", "reason": "gone"})
    wait_until(lambda: seen(client, "w/quic", "PeerGone"), 10, "PeerGone at quic")
    assert seen(client, "w/quic", "PeerOffer")[1] == offer | {
        "port": 40003, "quic_role": "client", "peer_fingerprint": None,
        "punch_token": derived_punch_token("bob", "alice")}
    gone = {"type": "PeerGone", "peer_id": "bob", "reason": "gone"}
    assert seen(client, "w/udp", "PeerGone") == seen(client, "w/quic", "PeerGone") == [gone]
    assert status(client)["last_offer"] is None and status(client)["connected"]
    ui = [m["payload"]["type"] for m in seen(client, "w/ui", "UiEvent")]
    assert ui.count("p2p_status_update") == 3


def test_reregisters_by_itself_after_the_server_restarts(
        worker: Any, rendezvous: FakeRendezvous) -> None:
    _, client = worker
    registered(client, rendezvous)
    rendezvous.stop()
    wait_until(lambda: not status(client)["connected"], 10, "the client to notice")
    rendezvous.start()
    wait_until(lambda: rendezvous.types(1) == ["register_public_ip", "update_udp_endpoint"], 20,
               "re-registration")
    assert rendezvous.received[-1][1]["udp_port"] == 40000
    wait_until(lambda: status(client)["registered"], 10, "the ack")
    states = [m["payload"].get("state") for m in seen(client, "w/ui", "UiEvent")]
    assert "disconnected" in states and states[-1] == "registered"


def test_a_graceful_stop_deregisters(worker: Any, rendezvous: FakeRendezvous) -> None:
    tree, client = worker
    registered(client, rendezvous)
    stop_tree(tree)
    assert rendezvous.types(0)[-1] == "explicit_deregister"


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(7)
    delays = [[reconnect_delay(attempt, rng) for _ in range(50)] for attempt in range(12)]
    assert min(delays[0]) >= 0.125 and max(delays[0]) <= 0.25
    assert min(delays[3]) >= 1.0 and max(delays[3]) <= 2.0
    assert max(max(d) for d in delays) <= BACKOFF_CAP and min(delays[-1]) >= BACKOFF_CAP / 2
    assert len(set(delays[-1])) > 1  # jittered, even at the cap
    assert reconnect_delay(10_000, rng) <= BACKOFF_CAP


def test_derived_token_is_the_same_on_both_sides() -> None:
    token = derived_punch_token("alice", "bob")
    assert token == derived_punch_token("bob", "alice") and len(bytes.fromhex(token)) == 16
    assert token != derived_punch_token("alice", "carol")


@pytest.mark.parametrize("bad", [
    {"peer_worker_id": "b/b", "peer_udp_ip": "127.0.0.1", "peer_udp_port": 1},
    {"peer_worker_id": "bob", "peer_udp_ip": "127.0.0.1", "peer_udp_port": 0},
    {"peer_worker_id": "bob", "peer_udp_ip": "127.0.0.1", "peer_udp_port": True},
    {"peer_worker_id": "bob", "peer_udp_ip": "127.0.0.1", "peer_udp_port": 1, "quic_role": "x"},
    {"peer_worker_id": "bob", "peer_udp_ip": "127.0.0.1", "peer_udp_port": 1,
     "punch_token": "zz" * 16},
    {"peer_worker_id": "bob", "peer_udp_ip": "127.0.0.1", "peer_udp_port": 1,
     "peer_cert_fingerprint": "ab"},
])
def test_bad_offers_are_decode_errors(bad: dict[str, Any]) -> None:
    with pytest.raises(DecodeError):
        offer_from_json(bad, "alice")


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
                    max_leaves=10)
OFFER_FIELDS = ("peer_worker_id", "peer_udp_ip", "peer_udp_port", "quic_role",
                "peer_cert_fingerprint", "punch_token")


@given(st.dictionaries(st.sampled_from(OFFER_FIELDS), JSON | st.just("127.0.0.1")))
def test_an_offer_is_an_offer_or_a_decode_error(obj: dict[str, Any]) -> None:
    try:
        assert isinstance(offer_from_json(obj, "alice"), Offer)
    except DecodeError:
        pass


@given(st.binary(max_size=200) | st.text(max_size=200) | JSON.map(json.dumps))
def test_a_server_frame_is_a_typed_object_or_a_decode_error(frame: str | bytes) -> None:
    try:
        assert isinstance(server_message(frame)["type"], str)
    except DecodeError:
        pass


# -- against the real rendezvous service ---------------------------------------------------------


@pytest.fixture
def real_rendezvous(tmp_path: Path) -> Iterator[tuple[str, Client]]:
    """The rendezvous tree (tests/support/rdv_tree.py) as a real root process: (ws url, client)."""
    pytest.importorskip("actors.rendezvous.tree")
    from tests.support.processes import ROOT, RunningTree

    workdir = tmp_path / "rdv"
    workdir.mkdir()
    log = workdir / "tree.log"
    script = ROOT / "tests" / "support" / "rdv_tree.py"
    proc = subprocess.Popen([sys.executable, str(script), str(workdir)],
                            stdout=subprocess.PIPE, stderr=open(log, "w"),  # noqa: SIM115
                            text=True)
    assert proc.stdout is not None
    ready = proc.stdout.readline().split()
    tree = RunningTree(proc, workdir, log)
    if ready[:1] != ["READY"]:
        stop_tree(tree)
        pytest.fail(f"the rendezvous tree did not start: {log.read_text()[-2000:]}")
    client = Client(tree.rundir)
    yield f"ws://127.0.0.1:{ready[1]}", client
    client.close()
    stop_tree(tree)


def test_two_workers_are_paired_again_after_the_edge_restarts(
        tmp_path: Path, real_rendezvous: tuple[str, Client]) -> None:
    url, rdv = real_rendezvous
    workers: dict[str, tuple[Any, Client]] = {}
    # Real keys: the service puts in offers only the fingerprints a worker proved.
    identities = {name: generate_self_signed(name) for name in ("alice", "bob")}
    alice_fp, bob_fp = (fingerprint(identities[n][0]) for n in ("alice", "bob"))
    try:
        for port, name in enumerate(("alice", "bob"), start=40000):
            (tmp_path / name).mkdir()
            cert, key = identities[name]
            tree = start("rdv", tmp_path / name, {
                "worker_id": name, "rendezvous_url": url, "token": "", "ip_echo_url": "",
                "fingerprint": fingerprint(cert), "cert_pem": cert.decode(),
                "key_pem": key.decode()})
            workers[name] = tree, Client(tree.rundir)
            workers[name][1].tell("w/rendezvous_client", StunResult(True, "127.0.0.1", port,
                                                                    "x", ""))
        alice, bob = (workers[name][1] for name in ("alice", "bob"))
        for client in (alice, bob):
            wait_until(lambda c=client: seen(c, "w/udp", "PeerOffer"), 15, "an offer")
        first = (seen(alice, "w/udp", "PeerOffer")[0], seen(bob, "w/udp", "PeerOffer")[0])
        assert (first[0]["peer_id"], first[0]["port"], first[0]["quic_role"]) == (
            "bob", 40001, "client")
        assert (first[1]["peer_id"], first[1]["port"], first[1]["quic_role"]) == (
            "alice", 40000, "server")
        assert first[0]["peer_fingerprint"] == bob_fp
        assert first[1]["peer_fingerprint"] == alice_fp
        assert first[0]["punch_token"] == first[1]["punch_token"]
        # The edge holds every connection: restarting it drops both; they come back by
        # themselves, register again and are paired again.
        assert rdv.restart("rendezvous", "rendezvous/edge") == "restarted"
        for client in (alice, bob):
            wait_until(lambda c=client: len(seen(c, "w/udp", "PeerOffer")) >= 2, 20,
                       "a new offer after the restart")
            assert status(client)["registered"]
        assert seen(alice, "w/udp", "PeerOffer")[-1]["peer_id"] == "bob"
    finally:
        for tree, client in workers.values():
            client.close()
            stop_tree(tree)
