"""End to end, as a user runs it: `python supervisor.py demo` (a rendezvous service and two
workers on loopback), driven through each worker's UI WebSocket as the page would."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from actors.client import Client
from tests.support.processes import ROOT, alive, descendants, wait_until, within

pytestmark = pytest.mark.timeout(240)


class Demo:
    def __init__(self, workdir: Path) -> None:
        self.log = workdir / "demo.log"
        self.rundir = str(workdir / "run")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "supervisor.py"), "demo", "--rundir", self.rundir],
            stdout=subprocess.PIPE, stderr=open(self.log, "w"), text=True,  # noqa: SIM115
            cwd=workdir)
        self.ui: dict[str, str] = {}
        self.tokens: dict[str, str] = {}  # each UI's token, from the URL the demo printed
        self.rendezvous = ""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if m := re.match(r"worker (\w+) UI:\s+(\S+)/\?token=(\S+)", line):
                self.ui[m[1]], self.tokens[m[1]] = m[2], m[3]
            elif m := re.match(r"rendezvous service: (\S+)/debug", line):
                self.rendezvous = m[1]
            elif "demo running" in line:
                break
        else:
            raise AssertionError(f"the demo did not start:\n{self.log.read_text()[-3000:]}")
        self.client = Client(self.rundir)

    def ws(self, name: str) -> str:
        return self.ui[name].replace("http://", "ws://") + f"/ui_ws?token={self.tokens[name]}"

    def api(self, name: str, path: str) -> Any:
        return httpx.get(self.ui[name] + path, timeout=5,
                         headers={"Authorization": f"Bearer {self.tokens[name]}"}).json()

    def pid(self, path: str) -> int:
        return self.client.node("demo", path)["pid"]

    def stop(self) -> None:
        below = descendants(self.proc.pid)
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(within(30))
            except subprocess.TimeoutExpired:
                self.proc.kill()
        wait_until(lambda: not any(alive(p) for p in below), 10, "the demo's processes to exit")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    running = Demo(tmp_path_factory.mktemp("demo"))
    yield running
    running.stop()


class Page:
    """One UI WebSocket, as the browser page holds it: commands out, events in."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def send(self, **command: Any) -> None:
        await self.ws.send(json.dumps(command))

    async def expect(self, match: Callable[[dict[str, Any]], bool], timeout: float = 20,
                     what: str = "") -> dict[str, Any]:
        deadline = time.monotonic() + within(timeout)
        seen = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = json.loads(await asyncio.wait_for(self.ws.recv(), left))
            except TimeoutError:
                break
            seen.append(event.get("type"))
            if match(event):
                return event
        raise AssertionError(f"no {what or 'matching event'} within {timeout} s; saw {seen[-20:]}")


async def page(demo: Demo, name: str) -> AsyncIterator[Page]:
    async with websockets.connect(demo.ws(name), max_size=2**20) as ws:
        yield Page(ws)


def kind(t: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("type") == t and all(e.get(k) == v for k, v in fields.items())


async def tunnel_up(p: Page, timeout: float = 30) -> None:
    await p.send(type="ui_client_hello")
    await p.expect(lambda e: e.get("type") == "quic_status_update" and e.get("state") == "up",
                   timeout, "quic_status_update up")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_health_and_tree(demo: Demo) -> None:
    for name in ("alice", "bob"):
        health = httpx.get(demo.ui[name] + "/health", timeout=5).json()
        assert health["status"] == "ok" and health["worker_id"] == name
        tree = demo.api(name, "/api/tree")
        paths = {n["path"]: n for n in tree}
        for child in ("udp", "stun", "quic", "rendezvous_client", "ui"):
            node = paths[f"demo/{name}/{child}"]
            assert node["state"] == "running" and node["pid"] > 0
            assert {"restarts", "uptime", "last_exit"} <= node.keys()


def test_paired_punched_and_tunnel_up(demo: Demo) -> None:
    async def check() -> None:
        async for alice in page(demo, "alice"):
            hello = await alice.expect(kind("init_info"), 10, "init_info")
            assert hello["worker_id"] == "alice"
            await tunnel_up(alice)
    run(check())
    listing = httpx.get(demo.rendezvous + "/debug/list_workers", timeout=5).json()
    assert {"alice", "bob"} <= set(listing["workers"])


def test_chat_both_ways_over_udp_and_quic(demo: Demo) -> None:
    async def check() -> None:
        async for alice in page(demo, "alice"):
            async for bob in page(demo, "bob"):
                await tunnel_up(alice)
                await tunnel_up(bob)
                await alice.send(type="send_p2p_message", content="hello over udp")
                got = await bob.expect(kind("p2p_message_received", content="hello over udp"))
                assert got["from_peer_id"] == "alice"
                await bob.send(type="send_quic_message", content="hello over quic")
                got = await alice.expect(kind("quic_message_received", content="hello over quic"))
                assert got["from_peer_id"] == "bob"
                await bob.send(type="send_p2p_message", content="back over udp")
                await alice.expect(kind("p2p_message_received", content="back over udp"))
    run(check())


def test_echo_and_ping_report_round_trip_times(demo: Demo) -> None:
    async def check() -> None:
        async for alice in page(demo, "alice"):
            await tunnel_up(alice)
            await alice.send(type="quic_echo_command", payload="ping-me")
            echo = await alice.expect(kind("quic_echo_response", payload="ping-me"))
            assert echo["rtt_ms"] > 0
            await alice.send(type="p2p_ping_command")
            ping = await alice.expect(kind("p2p_ping_result"))
            assert ping.get("rtt_ms", 0) > 0, ping
    run(check())


def test_kill_9_of_udp_during_echoes_keeps_the_tunnel(demo: Demo) -> None:
    async def check() -> None:
        async for alice in page(demo, "alice"):
            await tunnel_up(alice)
            port_before = demo.client.ask("demo/alice/udp", _status(), 5)["local_port"]
            old = demo.pid("demo/alice/udp")
            for i in range(20):
                await alice.send(type="quic_echo_command", payload=f"e{i}")
                if i == 5:
                    os.kill(old, signal.SIGKILL)
            for i in range(20):
                await alice.expect(kind("quic_echo_response", payload=f"e{i}"), 30, f"echo e{i}")
            assert demo.pid("demo/alice/udp") != old
            assert demo.client.ask("demo/alice/udp", _status(), 5)["local_port"] == port_before
    run(check())


def test_kill_9_of_quic_brings_the_tunnel_back_and_queued_chat_arrives_once(demo: Demo) -> None:
    async def check() -> None:
        async for alice in page(demo, "alice"):
            async for bob in page(demo, "bob"):
                await tunnel_up(alice)
                old = demo.pid("demo/alice/quic")
                os.kill(old, signal.SIGKILL)
                for i in range(5):
                    await alice.send(type="send_quic_message", content=f"queued {i}")
                got = []
                while len(got) < 5:
                    event = await bob.expect(kind("quic_message_received"), 40, "queued chat")
                    got.append(event["content"])
                assert got == [f"queued {i}" for i in range(5)]
                await alice.send(type="send_quic_message", content="after")
                event = await bob.expect(kind("quic_message_received"), 20)
                assert event["content"] == "after"  # no duplicate of a queued one came first
    run(check())


def test_rendezvous_restart_re_registers_and_re_pairs(demo: Demo) -> None:
    assert demo.client.restart("demo", "demo/rendezvous") == "restarted"

    def paired() -> bool:
        try:
            listing = httpx.get(demo.rendezvous + "/debug/list_workers", timeout=2).json()
        except httpx.HTTPError:
            return False
        workers = listing.get("workers", {})
        return all(workers.get(n, {}).get("paired_peer") for n in ("alice", "bob"))

    wait_until(paired, 40, "both workers to re-register and re-pair")


def _status() -> Any:
    from messages.worker import StatusRequest

    return StatusRequest()
