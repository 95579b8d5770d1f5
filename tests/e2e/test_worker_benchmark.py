"""The benchmark between two real workers (`python supervisor.py demo`), driven through each
worker's UI WebSocket as the page would: UDP and QUIC runs, loss, concurrency, downloads, bad
input, and kill -9 of the benchmark and quic actors mid-run."""

from __future__ import annotations

import hashlib
import http.server
import os
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from messages.worker import BenchmarkStart, StatusRequest
from protocol.benchmark.frames import MAX_CHUNK
from tests.e2e.test_worker_e2e import Demo, Page, kind, page, run, tunnel_up
from tests.support.processes import wait_until

pytestmark = pytest.mark.timeout(300)

MiB = 1024 * 1024
FILE_BYTES = os.urandom(3 * MiB + 12345)  # BENCHMARK_FILE, and what the HTTP server serves


class Served(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path != "/payload.bin":
            self.send_error(404, "no such payload")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(FILE_BYTES)))
        self.end_headers()
        self.wfile.write(FILE_BYTES)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Served)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, http_url: str) -> Iterator[Demo]:
    workdir = tmp_path_factory.mktemp("bench")
    payload = workdir / "payload.bin"
    payload.write_bytes(FILE_BYTES)
    saved = {k: os.environ.get(k) for k in ("BENCHMARK_FILE", "BENCHMARK_GCS_URL")}
    os.environ["BENCHMARK_FILE"] = str(payload)
    os.environ["BENCHMARK_GCS_URL"] = f"{http_url}/payload.bin"
    try:
        running = Demo(workdir)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    yield running
    running.stop()


def result(role: str, **fields: Any) -> Any:
    return lambda e: (e.get("type") == "benchmark_result" and e.get("role") == role
                      and all(e.get(k) == v for k, v in fields.items()))


async def started(p: Page) -> int:
    event = await p.expect(kind("benchmark_started", role="sender"), 30, "benchmark_started")
    return event["session_id"]


def test_udp_run_completes_with_its_result_on_both_uis(demo: Demo) -> None:
    size = 4 * MiB + 7

    async def check() -> None:
        async for alice in page(demo, "alice"):
            async for bob in page(demo, "bob"):
                await tunnel_up(alice)
                await alice.send(type="start_benchmark_send", mode="udp", size=size)
                sid = await started(alice)
                await alice.expect(kind("benchmark_progress", session_id=sid), 30, "progress")
                mine = await alice.expect(result("sender", session_id=sid), 60, "sender result")
                theirs = await bob.expect(result("receiver", session_id=sid), 10, "receiver")
                for event in (mine, theirs):
                    assert event["status"] == "complete" and event["ok"], event
                    assert event["bytes"] == size and event["sha256_match"]
                    assert event["chunks"] == -(-size // MAX_CHUNK) and event["lost"] == 0
                    assert event["goodput_mb_s"] > 0
                assert mine["sha256"] == theirs["sha256"]
    run(check())


def test_quic_run_checks_sha256_end_to_end(demo: Demo) -> None:
    size = 6 * MiB + 3

    async def check() -> None:
        async for alice in page(demo, "alice"):
            async for bob in page(demo, "bob"):
                await tunnel_up(alice)
                await bob.send(type="start_benchmark_send", mode="quic", size=size)
                sid = await started(bob)
                mine = await bob.expect(result("sender", session_id=sid), 90, "sender result")
                theirs = await alice.expect(result("receiver", mode="quic"), 10, "receiver")
                assert mine["ok"] and mine["sha256_match"] and mine["bytes"] == size, mine
                assert theirs["ok"] and theirs["bytes"] == size, theirs
                assert mine["sha256"] == theirs["sha256"]
    run(check())


def test_loss_is_counted_when_datagrams_are_dropped_on_purpose(demo: Demo) -> None:
    chunks, every = 1000, 10  # the sender leaves every 10th DATA off the wire: 100 lost

    async def check() -> None:
        async for alice in page(demo, "alice"):
            async for bob in page(demo, "bob"):
                await tunnel_up(alice)
                demo.client.tell("demo/alice/benchmark", BenchmarkStart(
                    "udp", "size", chunks * MAX_CHUNK, "", 5e6, drop_every=every))
                sid = await started(alice)
                mine = await alice.expect(result("sender", session_id=sid), 60, "result")
                theirs = await bob.expect(result("receiver", session_id=sid), 10, "receiver")
                for event in (mine, theirs):
                    assert event["status"] == "incomplete" and not event["sha256_match"]
                    assert event["lost"] == chunks // every, event
                    assert event["chunks"] == chunks - chunks // every
                    assert event["loss"] == pytest.approx(0.1)
    run(check())


def test_concurrent_sessions_both_ways(demo: Demo) -> None:
    async def check() -> None:
        async for alice in page(demo, "alice"):
            async for bob in page(demo, "bob"):
                await tunnel_up(alice)
                await alice.send(type="start_benchmark_send", mode="udp", size=2 * MiB)
                await alice.send(type="start_benchmark_send", mode="udp", size=3 * MiB)
                await bob.send(type="start_benchmark_send", mode="udp", size=2 * MiB + 1)
                sizes = {}
                for p, n in ((alice, 2), (bob, 1)):
                    while len([s for s in sizes.values() if s[0] is p]) < n:
                        event = await p.expect(kind("benchmark_started", role="sender"), 30)
                        sizes[event["session_id"]] = (p, event["total_bytes"])
                for sid, (p, size) in sizes.items():
                    event = await p.expect(result("sender", session_id=sid), 90, f"run {sid}")
                    assert event["ok"] and event["bytes"] == size, event
    run(check())


def test_file_and_download_sources(demo: Demo, http_url: str) -> None:
    digest = hashlib.sha256(FILE_BYTES).hexdigest()

    async def check() -> None:
        async for alice in page(demo, "alice"):
            await tunnel_up(alice)
            for mode, source in (("udp", "file"), ("udp", "url"), ("quic", "url")):
                await alice.send(type="start_benchmark_send", mode=mode, source=source)
                sid = await started(alice)
                event = await alice.expect(result("sender", session_id=sid), 90, source)
                assert event["ok"] and event["bytes"] == len(FILE_BYTES), event
                assert event["sha256"] == digest
    run(check())


def test_a_failing_download_and_bad_commands_give_clear_errors(demo: Demo,
                                                              http_url: str) -> None:
    async def check() -> None:
        async for alice in page(demo, "alice"):
            await tunnel_up(alice)
            await alice.send(type="start_benchmark_send", source="url", url=f"{http_url}/gone")
            event = await alice.expect(result("sender"), 30, "download error")
            assert not event["ok"] and "HTTP 404" in event["error"] and "/gone" in event["error"]
            await alice.send(type="start_benchmark_send", source="url", url="http://127.0.0.1:9/x")
            event = await alice.expect(result("sender"), 30, "connection error")
            assert "127.0.0.1:9" in event["error"], event
            for bad in ({"mode": "tcp"}, {"size": -1}, {"size": "big"}, {"source": "disk"}):
                await alice.send(type="start_benchmark_send", **bad)
                error = await alice.expect(kind("error"), 10, f"error for {bad}")
                assert "start_benchmark_send" in error["message"]
            await alice.send(type="cancel_benchmark", session_id="x")
            await alice.expect(kind("error"), 10, "cancel error")
    run(check())


def test_forged_benchmark_datagrams_are_dropped_and_a_run_carries_on(demo: Demo) -> None:
    bob_port = demo.client.ask("demo/bob/udp", StatusRequest(), 5)["local_port"]

    async def check() -> None:
        async for alice in page(demo, "alice"):
            async for bob in page(demo, "bob"):
                await tunnel_up(alice)
                await alice.send(type="start_benchmark_send", size=3 * MiB, rate_mb_s=10)
                sid = await started(alice)
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
                    for forged in (b"\x0e", b"\x0e\x01\x01" + bytes(14), b"\x0e" * 1300):
                        for _ in range(200):
                            stranger.sendto(forged, ("127.0.0.1", bob_port))
                await bob.send(type="send_p2p_message", content="chat during the run")
                await alice.expect(kind("p2p_message_received", content="chat during the run"))
                event = await alice.expect(result("sender", session_id=sid), 60, "result")
                # the flood may cost the run a few chunks (a full socket buffer), never its count
                assert event["status"] in ("complete", "incomplete"), event
                assert event["chunks"] + event["lost"] == event["chunks_sent"]
                theirs = await bob.expect(result("receiver", session_id=sid), 10, "receiver")
                assert theirs["bytes"] == event["bytes"]
    run(check())
    counts = demo.client.ask("demo/bob/udp", StatusRequest(), 5)["counts"]
    assert counts["benchmark_from_stranger"] >= 600


def test_chat_flows_during_a_quic_run(demo: Demo) -> None:
    async def check() -> None:
        async for alice in page(demo, "alice"):
            async for bob in page(demo, "bob"):
                await tunnel_up(alice)
                await alice.send(type="start_benchmark_send", mode="quic", size=40 * MiB)
                sid = await started(alice)
                await alice.expect(kind("benchmark_progress", session_id=sid), 30, "progress")
                for i in range(3):
                    await bob.send(type="send_quic_message", content=f"during {i}")
                    await alice.expect(kind("quic_message_received", content=f"during {i}"), 30)
                    await bob.send(type="send_p2p_message", content=f"udp {i}")
                    await alice.expect(kind("p2p_message_received", content=f"udp {i}"), 30)
                await alice.send(type="cancel_benchmark", session_id=sid)
                event = await alice.expect(result("sender", session_id=sid), 30, "cancelled")
                assert event["status"] in ("cancelled", "complete"), event
    run(check())


def test_kill_9_of_the_benchmark_actor_ends_the_run_on_both_sides(demo: Demo) -> None:
    async def check() -> None:
        async for alice in page(demo, "alice"):
            async for bob in page(demo, "bob"):
                await tunnel_up(alice)
                await alice.send(type="start_benchmark_send", mode="udp", size=200 * MiB,
                                 rate_mb_s=20)
                sid = await started(alice)
                await bob.expect(kind("benchmark_progress", session_id=sid), 30, "progress")
                old = demo.pid("demo/alice/benchmark")
                os.kill(old, signal.SIGKILL)
                event = await alice.expect(result("sender", session_id=sid), 30, "its end")
                assert not event["ok"] and "restarted mid-run" in event["error"]
                theirs = await bob.expect(result("receiver", session_id=sid), 30, "receiver")
                assert theirs["status"] in ("cancelled", "abandoned"), theirs
                wait_until(lambda: demo.pid("demo/alice/benchmark") not in (0, old),  # noqa: B023
                           30, "the benchmark actor back")
                await alice.send(type="start_benchmark_send", size=MiB)
                sid = await started(alice)
                assert (await alice.expect(result("sender", session_id=sid), 60))["ok"]
    run(check())


def kill_quic_mid_run(demo: Demo) -> None:
    async def check() -> None:
        async for alice in page(demo, "alice"):
            async for bob in page(demo, "bob"):
                await tunnel_up(alice)
                await alice.send(type="start_benchmark_send", mode="quic", size=300 * MiB)
                sid = await started(alice)
                await alice.expect(kind("benchmark_progress", session_id=sid), 30, "progress")
                os.kill(demo.pid("demo/alice/quic"), signal.SIGKILL)
                event = await alice.expect(result("sender", session_id=sid), 40, "its end")
                assert not event["ok"] and "QUIC run ended" in event["error"], event
                theirs = await bob.expect(result("receiver", mode="quic"), 60, "receiver end")
                assert not theirs["ok"] and theirs["error"], theirs
    run(check())


def test_kill_9_of_quic_ends_a_quic_run_with_a_clear_result_on_both_sides(demo: Demo) -> None:
    kill_quic_mid_run(demo)


def test_after_a_kill_9_of_quic_mid_run_the_tunnel_and_chat_come_back(demo: Demo) -> None:
    async def check() -> None:
        async for alice in page(demo, "alice"):
            async for bob in page(demo, "bob"):
                await tunnel_up(alice, 60)
                await alice.send(type="send_quic_message", content="after the kill")
                await bob.expect(kind("quic_message_received", content="after the kill"), 30)
                await alice.send(type="start_benchmark_send", mode="quic", size=2 * MiB)
                sid = await started(alice)
                assert (await alice.expect(result("sender", session_id=sid), 60))["ok"]
    run(check())
