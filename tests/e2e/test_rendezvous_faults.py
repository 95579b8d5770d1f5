"""Fault injection against the rendezvous tree: kill -9 of the registry or the pairing actor loses
no registered worker and no connection, and pairing resumes; kill -9 of the edge drops the dead
connections from the registry, and reconnecting workers are paired again."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.client import Client
from tests.support.processes import within
from tests.support.rdv_tree import (
    Rendezvous,
    Worker,
    connect,
    run,
    start_rendezvous,
    stop_rendezvous,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def rdv(tmp_path: Path) -> Iterator[tuple[Rendezvous, Client]]:
    service = start_rendezvous(tmp_path)
    client = Client(service.rundir)
    client.subscribe("rendezvous")
    yield service, client
    client.close()
    stop_rendezvous(service)


async def kill_9(client: Client, name: str) -> None:
    """SIGKILL the actor and wait for its restart."""
    await restarted(client, name, kill(client, name))


def kill(client: Client, name: str) -> int:
    pid = client.node("rendezvous", f"rendezvous/{name}")["pid"]
    os.kill(pid, signal.SIGKILL)
    return pid


async def restarted(client: Client, name: str, old_pid: int) -> None:
    path = f"rendezvous/{name}"
    event = await asyncio.to_thread(client.wait_event, "restarted", path, within(10))
    assert event.pid != old_pid and event.reason == "killed by SIGKILL"


async def ready(rdv: Rendezvous, worker_id: str, port: int) -> Worker:
    worker = await connect(rdv, worker_id)
    await worker.endpoint(port)
    return worker


async def offered(worker: Worker) -> str:
    return (await worker.expect("p2p_connection_offer"))["peer_worker_id"]


def test_kill_9_of_the_registry_loses_no_worker(rdv: tuple[Rendezvous, Client]) -> None:
    service, client = rdv

    async def scenario() -> None:
        a, b = await ready(service, "a", 50001), await ready(service, "b", 50002)
        assert (await offered(a), await offered(b)) == ("b", "a")
        c = await ready(service, "c", 50003)
        d = await connect(service, "d")
        await d.send({"type": "register_public_ip", "ip": "198.51.100.4"})
        old = kill(client, "registry")
        # Sent while the registry is dead: it waits in the mailbox for the next incarnation,
        # which handles it on the records rebuilt from the edge.
        await d.send({"type": "update_udp_endpoint", "udp_ip": "127.0.0.1", "udp_port": 50004})
        await restarted(client, "registry", old)
        await d.expect("udp_endpoint_ack")
        assert (await offered(c), await offered(d)) == ("d", "c")
        listed = await service.workers()
        assert sorted(listed) == ["a", "b", "c", "d"]
        assert {w: e["paired_peer"] for w, e in listed.items()} == \
            {"a": "b", "b": "a", "c": "d", "d": "c"}
        assert listed["d"]["http_reported_public_ip"] == "198.51.100.4"
        assert listed["a"]["stun_reported_udp_port"] == 50001
        for worker in (a, b, c, d):
            await worker.echo()  # every connection survived
        await b.close()
        assert (await a.expect("peer_disconnected"))["peer_worker_id"] == "b"
        assert await c.silent() and await d.silent()
    run(scenario())


def test_kill_9_of_pairing_keeps_the_pairs_and_resumes(rdv: tuple[Rendezvous, Client]) -> None:
    service, client = rdv

    async def scenario() -> None:
        a, b = await ready(service, "a", 51001), await ready(service, "b", 51002)
        assert (await offered(a), await offered(b)) == ("b", "a")
        c = await ready(service, "c", 51003)
        await kill_9(client, "pairing")
        d = await ready(service, "d", 51004)  # pairs with the waiting c, not with a or b
        assert (await offered(c), await offered(d)) == ("d", "c")
        await b.close()  # the rebuilt table knows a's peer
        assert (await a.expect("peer_disconnected"))["peer_worker_id"] == "b"
        e = await ready(service, "e", 51005)
        assert (await offered(a), await offered(e)) == ("e", "a")
        listed = await service.workers()
        assert {w: x["paired_peer"] for w, x in listed.items()} == \
            {"a": "e", "e": "a", "c": "d", "d": "c"}
        for worker in (a, c, d, e):
            assert await worker.silent()
    run(scenario())


def test_kill_9_of_both_rebuilds_from_the_edge(rdv: tuple[Rendezvous, Client]) -> None:
    service, client = rdv

    async def scenario() -> None:
        a, b = await ready(service, "a", 52001), await ready(service, "b", 52002)
        assert (await offered(a), await offered(b)) == ("b", "a")
        c = await ready(service, "c", 52003)
        await kill_9(client, "pairing")
        await kill_9(client, "registry")
        d = await ready(service, "d", 52004)
        assert (await offered(c), await offered(d)) == ("d", "c")
        assert sorted(await service.workers()) == ["a", "b", "c", "d"]
        for worker in (a, b):
            assert await worker.silent()
    run(scenario())


def test_kill_9_of_the_edge_drops_its_dead_connections(rdv: tuple[Rendezvous, Client]) -> None:
    service, client = rdv

    async def scenario() -> None:
        a, b = await ready(service, "a", 53001), await ready(service, "b", 53002)
        assert (await offered(a), await offered(b)) == ("b", "a")
        await ready(service, "c", 53003)
        await kill_9(client, "edge")
        for worker in (a, b):
            code, _ = await worker.closed_with()
            assert code == 1006  # the process died: no closing handshake
        while await service.workers():
            await asyncio.sleep(0.02)
        # The workers reconnect (their own job): same ids, paired afresh, nothing stale left.
        a2, b2 = await ready(service, "a", 53001), await ready(service, "b", 53002)
        assert (await offered(a2), await offered(b2)) == ("b", "a")
        assert sorted(await service.workers()) == ["a", "b"]
    run(scenario())
