"""The worker's data plane with real processes on loopback: two workers' udp and quic actors
(tests/support/dataplane_tree.py), paired by PeerOffers the test feeds, observed through the
recorders that stand in for each worker's ui."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.client import Client
from messages.worker import ChatSend, EchoPeer, PeerOffer, PingPeer, StatusRequest
from protocol.certs import fingerprint, generate_self_signed
from tests.support.dataplane_tree import PUNCH_DEADLINE
from tests.support.processes import ROOT, RunningTree, stop_tree, wait_until, within

TOKEN = "0123456789abcdef0123456789abcdef"
Event = dict[str, Any]


class Plane:
    """The running tree, a client into it, and what each worker's ui recorder saw."""

    def __init__(self, tree: RunningTree) -> None:
        self.tree = tree
        self.client = Client(tree.rundir)
        self.port = {n: self.ask(n, "udp", StatusRequest())["local_port"] for n in ("alice", "bob")}
        self.fp = {n: fingerprint((tree.workdir / f"{n}.cert.pem").read_bytes())
                   for n in ("alice", "bob")}

    def ask(self, worker: str, actor: str, msg: Any) -> Any:
        return self.client.ask(f"dp/{worker}/{actor}", msg, within(5))

    def tell(self, worker: str, actor: str, msg: Any) -> None:
        self.client.tell(f"dp/{worker}/{actor}", msg)

    def offer(self, worker: str, peer: str, role: str, peer_fp: str | None = None) -> None:
        offer = PeerOffer(peer, "127.0.0.1", self.port[peer], role, peer_fp or self.fp[peer],
                          TOKEN)
        self.tell(worker, "quic", offer)
        self.tell(worker, "udp", offer)

    def pair(self, alice_pins: str | None = None) -> None:
        self.offer("alice", "bob", "client", alice_pins)
        self.offer("bob", "alice", "server")

    def ui(self, worker: str) -> list[Event]:
        file = self.tree.workdir / f"{worker}.ui.jsonl"
        if not file.exists():
            return []
        lines = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
        return [line["payload"] for line in lines if line["msg"] == "UiEvent"]

    def wait(self, worker: str, match: Callable[[Event], bool], what: str,
             timeout: float = 10) -> Event:
        found: list[Event] = []
        wait_until(lambda: found.extend(e for e in self.ui(worker) if match(e)) or found,
                   timeout, f"{worker}: {what}")
        return found[0]

    def pid(self, worker: str, actor: str) -> int:
        return self.client.node("dp", f"dp/{worker}/{actor}")["pid"]

    def tunnel_up(self) -> None:
        for worker in ("alice", "bob"):
            self.wait(worker, kind("quic_status_update", state="up"), "tunnel up")


def kind(t: str, **fields: Any) -> Callable[[Event], bool]:
    return lambda e: e.get("type") == t and all(e.get(k) == v for k, v in fields.items())


def start(workdir: Path) -> RunningTree:
    log = workdir / "tree.log"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "support" / "dataplane_tree.py"), str(workdir)],
        stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)  # noqa: SIM115
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "READY":
        proc.kill()
        raise AssertionError(f"data plane tree did not start: {log.read_text()[-3000:]}")
    return RunningTree(proc, workdir, log)


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    tree = start(tmp_path)
    plane = Plane(tree)
    try:
        yield plane
    finally:
        plane.client.close()
        stop_tree(tree)


def test_punch_then_tunnel_then_chat_echo_and_ping(plane: Plane) -> None:
    plane.pair()
    for worker, peer in (("alice", "bob"), ("bob", "alice")):
        status = plane.ask(worker, "udp", StatusRequest())["path"]
        wait_until(lambda w=worker: plane.ask(w, "udp", StatusRequest())["path"]["state"]
                   == "connected", 10, f"{worker}: path connected")
        assert status["peer_id"] == peer
    plane.tunnel_up()
    assert plane.ask("alice", "quic", StatusRequest())["tunnel_role"] == "client"

    plane.tell("alice", "udp", ChatSend("hello over udp"))
    got = plane.wait("bob", kind("p2p_message_received", content="hello over udp"), "udp chat")
    assert got["from_peer_id"] == "alice"
    plane.tell("bob", "udp", ChatSend("back over udp"))
    plane.wait("alice", kind("p2p_message_received", content="back over udp"), "udp chat back")

    plane.tell("bob", "quic", ChatSend("hello over quic"))
    got = plane.wait("alice", kind("quic_message_received", content="hello over quic"), "quic")
    assert got["from_peer_id"] == "bob"
    plane.tell("alice", "quic", ChatSend("back over quic"))
    plane.wait("bob", kind("quic_message_received", content="back over quic"), "quic back")

    plane.tell("alice", "quic", EchoPeer("ping-me"))
    echo = plane.wait("alice", kind("quic_echo_response", payload="ping-me"), "echo")
    assert echo["rtt_ms"] > 0 and "error" not in echo
    plane.tell("bob", "udp", PingPeer())
    ping = plane.wait("bob", kind("p2p_ping_result"), "ping")
    assert ping.get("rtt_ms", 0) > 0, ping


def test_a_worker_pinning_the_wrong_fingerprint_never_gets_the_tunnel_up(plane: Plane) -> None:
    impostor = fingerprint(generate_self_signed("impostor")[0])
    plane.pair(alice_pins=impostor)
    failed = plane.wait("alice", kind("quic_status_update", state="auth_failed"), "auth failed")
    assert "pinned" in failed["message"]
    plane.wait("alice", kind("quic_status_update", state="down"), "tunnel down", 5)
    assert plane.ask("alice", "udp", StatusRequest())["path"]["state"] == "connected"
    for worker in ("alice", "bob"):
        assert not [e for e in plane.ui(worker) if kind("quic_status_update", state="up")(e)]
    plane.tell("alice", "quic", EchoPeer("x"))
    echo = plane.wait("alice", kind("quic_echo_response", payload="x"), "echo refusal")
    assert echo["error"] == "the QUIC tunnel is not up"


def test_kill_9_of_udp_during_echoes_keeps_the_tunnel(plane: Plane) -> None:
    plane.pair()
    plane.tunnel_up()
    port, old = plane.port["alice"], plane.pid("alice", "udp")
    for i in range(30):
        plane.tell("alice", "quic", EchoPeer(f"e{i}"))
        if i == 10:
            os.kill(old, signal.SIGKILL)
        time.sleep(0.02)  # a stream of echoes spread over the kill, not a wait for a condition
    for i in range(30):
        echo = plane.wait("alice", kind("quic_echo_response", payload=f"e{i}"), f"echo e{i}", 20)
        assert "error" not in echo, echo
    assert plane.pid("alice", "udp") != old
    assert plane.ask("alice", "udp", StatusRequest())["local_port"] == port
    quiet_until = time.monotonic() + within(PUNCH_DEADLINE + 0.5)
    while time.monotonic() < quiet_until:  # the resumed path must outlive a punch deadline
        assert plane.ask("alice", "udp", StatusRequest())["path"]["state"] == "connected"
        time.sleep(0.1)
    for worker in ("alice", "bob"):
        assert not [e for e in plane.ui(worker) if kind("quic_status_update", state="down")(e)]


@pytest.mark.parametrize("victim", ["alice", "bob"])  # alice is the QUIC client, bob the server
def test_kill_9_of_quic_brings_the_tunnel_back_and_queued_chat_arrives_once(
        plane: Plane, victim: str) -> None:
    peer = "bob" if victim == "alice" else "alice"
    plane.pair()
    plane.tunnel_up()
    plane.tell(victim, "quic", ChatSend("before"))
    plane.wait(peer, kind("quic_message_received", content="before"), "chat before the kill")
    old = plane.pid(victim, "quic")
    os.kill(old, signal.SIGKILL)
    for i in range(5):
        plane.tell(victim, "quic", ChatSend(f"queued {i}"))
    plane.wait(peer, kind("quic_message_received", content="queued 4"), "queued chats", 20)
    plane.tell(victim, "quic", ChatSend("after"))
    plane.wait(peer, kind("quic_message_received", content="after"), "chat after")
    chats = [e["content"] for e in plane.ui(peer) if kind("quic_message_received")(e)]
    assert chats == ["before"] + [f"queued {i}" for i in range(5)] + ["after"]
    assert plane.pid(victim, "quic") != old
    assert plane.ask(victim, "quic", StatusRequest())["state"] == "up"
