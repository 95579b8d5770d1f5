"""The stun actor in a real tree, against real STUN servers on loopback: it finds the mapping
of the udp actor's socket (every request leaves through it), reports only a changed mapping,
re-checks on RedoStun, reports failures with their reason and retries until a server answers."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stun

from actors.client import Client
from actors.rendezvous.stun import serve_stun
from actors.worker.stun import ONE_ADDRESS
from messages.worker import RedoStun, StatusRequest

# The fixtures are imported to be used by name, hence the F811 on the tests that take them.
from tests.e2e.test_stun_interop import (  # noqa: F401
    RecordingResponder,
    coturn,
    free_udp_port,
    our_responder,
    stund,
)
from tests.support.ctl_tree import start
from tests.support.processes import stop_tree, wait_until, within

pytestmark = pytest.mark.timeout(60)

Address = tuple[str, int]


@pytest.fixture
def stun_tree(tmp_path: Path) -> Iterator[Any]:
    """``run(server)`` starts the tree against ``server``: (client, the udp socket's address).
    ``tree="stun_udp"`` runs the real UdpActor instead of the stand-in."""
    started: list[Any] = []

    def run(server: Address, tree: str = "stun", **extra: Any) -> tuple[Client, Address]:
        config = {"worker_id": "alice", "stun_host": server[0], "stun_port": server[1],
                  "udp_host": "127.0.0.1", "udp_port": 0, "stun_rto": 0.1,
                  "nat_timeout": 0.3, **extra}
        started.append(start(tree, tmp_path, config))
        client = Client(started[-1].rundir)
        started.append(client)
        local = client.ask("w/udp", StatusRequest())
        return client, (local["local_host"], local["local_port"])

    yield run
    for item in reversed(started):
        item.close() if isinstance(item, Client) else stop_tree(item)


def seen(client: Client, path: str, kind: str) -> list[dict[str, Any]]:
    return [m for m in client.ask(path, StatusRequest())["seen"] if m["type"] == kind]


def wait_for(client: Client, path: str, kind: str, count: int = 1) -> list[dict[str, Any]]:
    wait_until(lambda: len(seen(client, path, kind)) >= count, 10, f"{count} {kind} at {path}")
    return seen(client, path, kind)


def result(host: str, port: int, nat_type: str) -> dict[str, Any]:
    return {"type": "StunResult", "ok": True, "host": host, "port": port, "nat_type": nat_type,
            "reason": ""}


@pytest.mark.parametrize("tree", ["stun", "stun_udp"])
def test_maps_the_udp_actors_socket_and_reports_only_a_change(
        stun_tree: Any, our_responder: RecordingResponder, tree: str) -> None:  # noqa: F811
    client, udp = stun_tree(our_responder.address, tree)
    expected = result(*udp, ONE_ADDRESS)
    assert wait_for(client, "w/rendezvous_client", "StunResult") == [expected]
    assert set(our_responder.sources) == {udp}  # the udp actor's socket, no other
    update = {"type": "stun_update", "public_ip": udp[0], "public_port": udp[1],
              "nat_type": ONE_ADDRESS}
    assert [m["payload"] for m in wait_for(client, "w/ui", "UiEvent")] == [update]

    client.tell("w/stun", RedoStun())
    events = wait_for(client, "w/ui", "UiEvent", 2)
    assert [m["payload"] for m in events] == [update, update]  # the user asked: shown again
    assert seen(client, "w/rendezvous_client", "StunResult") == [expected]  # nothing changed
    assert len(our_responder.sources) == 2
    status = client.ask("w/stun", StatusRequest())
    assert (status["public_ip"], status["public_port"], status["checks"]) == (*udp, 2)


def test_coturn_sees_the_udp_actors_socket(stun_tree: Any, coturn: Address) -> None:  # noqa: F811
    client, udp = stun_tree(coturn)
    assert wait_for(client, "w/rendezvous_client", "StunResult") == [result(*udp, ONE_ADDRESS)]


def test_stund_gives_the_nat_type_through_pystun3_on_the_same_socket(
        stun_tree: Any, stund: Address) -> None:  # noqa: F811
    client, udp = stun_tree(stund)
    results = wait_for(client, "w/rendezvous_client", "StunResult", 2)
    # The mapping first (peers wait for it), then pystun3's verdict: no NAT on loopback.
    assert [r["nat_type"] for r in results] == ["unknown (not tested yet)", stun.OpenInternet]
    assert {(r["host"], r["port"]) for r in results} == {udp}


def test_silence_is_reported_and_retried_until_a_server_answers(stun_tree: Any) -> None:
    port = free_udp_port("127.0.0.1")
    client, udp = stun_tree(("127.0.0.1", port), stun_rto=0.03, stun_max_transmits=2,
                            stun_retry=0.2)
    failure = wait_for(client, "w/rendezvous_client", "StunResult")[0]
    assert not failure["ok"]
    assert failure["reason"] == f"no answer from STUN server 127.0.0.1:{port} after 2 tries"
    ui = wait_for(client, "w/ui", "UiEvent")[0]["payload"]
    assert ui == {"type": "error", "message": f"STUN: {failure['reason']}"}
    with answering_on(port):
        results = wait_for(client, "w/rendezvous_client", "StunResult", 2)
    assert results[1] == result(*udp, ONE_ADDRESS)
    assert client.ask("w/stun", StatusRequest())["checks"] >= 2


def test_a_restarted_stun_actor_checks_again_at_once(
        stun_tree: Any, our_responder: RecordingResponder) -> None:  # noqa: F811
    client, udp = stun_tree(our_responder.address)
    wait_for(client, "w/rendezvous_client", "StunResult")
    os.kill(client.node("w", "w/stun")["pid"], signal.SIGKILL)
    # The new incarnation knows nothing: it checks and reports again (the port is the same).
    assert wait_for(client, "w/rendezvous_client", "StunResult", 2)[1] == result(*udp, ONE_ADDRESS)


class answering_on:  # noqa: N801 (used as a context manager, like open)
    """Our responder on ``port`` of 127.0.0.1, in a thread, for the length of a with block."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.run, name="responder", daemon=True)

    def run(self) -> None:
        transport, _ = self.loop.run_until_complete(serve_stun(self.sock))
        self.loop.run_forever()
        transport.close()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()

    def __enter__(self) -> None:
        self.thread.start()

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(within(5))
        assert not self.thread.is_alive()
