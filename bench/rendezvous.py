"""Rendezvous service benchmark: N concurrent workers on loopback.

    python bench/rendezvous.py [N ...]        (default: 1000 5000 10000, as the fd limit allows)

For each N: registrations per second (connect + identity proof accepted +
``register_public_ip``, all N at once; every worker signs the service's challenge with a key of
its own), the time from a pair's second endpoint to both offers delivered (p50, p99; one pair
at a time, so first-come-first-served pairing pairs exactly those two), and memory per
connection of the edge process, against a bare ``websockets`` server holding the same N
connections.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol.certs import generate_self_signed  # noqa: E402
from protocol.rendezvous.client_wire import identity_proof  # noqa: E402
from protocol.rendezvous.identity import CHALLENGE_HEADER  # noqa: E402

BARE_SERVER = """
import asyncio, sys
from websockets.asyncio.server import serve
async def hold(ws):
    async for _ in ws:
        pass
async def main():
    async with serve(hold, "127.0.0.1", 0, max_queue=4) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()
asyncio.run(main())
"""


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))


def start_rendezvous(workdir: str, n: int) -> tuple[subprocess.Popen[str], int, int]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "support" / "rdv_tree.py"),
                             workdir, "--max-workers", str(n + 10),
                             "--tune", f"per_address={n + 10}"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline().split()[1])
    from actors.client import Client

    client = Client(os.path.join(workdir, "run"))
    edge_pid = client.node("rendezvous", "rendezvous/edge")["pid"]
    client.close()
    return proc, port, edge_pid


# Handshakes in flight at once: beyond the listen backlog (1024) connects start to fail.
IN_FLIGHT = 500


async def register(url: str, n: int) -> tuple[list[Any], float]:
    """Every worker proves its own key (identity_proof) before it registers."""
    gate = asyncio.Semaphore(IN_FLIGHT)
    identities = [generate_self_signed(f"w{i}") for i in range(n)]

    async def one(i: int) -> Any:
        async with gate:
            ws = await connect(f"{url}/ws/register/w{i}", open_timeout=60, ping_interval=None)
        nonce = ws.response.headers[CHALLENGE_HEADER]
        await ws.send(json.dumps(identity_proof(f"w{i}", nonce, *identities[i])))
        await until(ws, "identity_accepted")
        await ws.send(json.dumps({"type": "register_public_ip", "ip": "198.51.100.1"}))
        return ws

    started = time.perf_counter()
    sockets = await asyncio.gather(*(one(i) for i in range(n)))
    return sockets, n / (time.perf_counter() - started)


async def offer_latencies(sockets: list[Any]) -> list[float]:
    latencies = []
    for first, second in zip(sockets[0::2], sockets[1::2]):
        await first.send(json.dumps({"type": "update_udp_endpoint", "udp_ip": "127.0.0.1",
                                     "udp_port": 40000}))
        await until(first, "udp_endpoint_ack")
        started = time.perf_counter()
        await second.send(json.dumps({"type": "update_udp_endpoint", "udp_ip": "127.0.0.1",
                                      "udp_port": 40001}))
        await asyncio.gather(until(first, "p2p_connection_offer"),
                             until(second, "p2p_connection_offer"))
        latencies.append(time.perf_counter() - started)
    return latencies


async def until(ws: Any, kind: str) -> None:
    while json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] != kind:
        pass


def time_listing(port: int) -> float:
    """Milliseconds for one whole ``/debug/list_workers`` (every worker)."""
    import urllib.request

    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/debug/list_workers", timeout=60) as r:
        r.read()
    return (time.perf_counter() - started) * 1000


async def bare_baseline(n: int) -> float:
    proc = subprocess.Popen([sys.executable, "-c", BARE_SERVER], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    before = rss_kib(proc.pid)
    sockets = [await connect(f"ws://127.0.0.1:{port}/", ping_interval=None) for _ in range(n)]
    await asyncio.sleep(0.5)
    per_connection = (rss_kib(proc.pid) - before) / n
    await asyncio.gather(*(ws.close() for ws in sockets))
    proc.terminate()
    proc.wait()
    return per_connection


async def bench(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rdv-bench-") as workdir:
        proc, port, edge_pid = start_rendezvous(workdir, n)
        try:
            before = rss_kib(edge_pid)
            sockets, rate = await register(f"ws://127.0.0.1:{port}", n)
            await asyncio.sleep(0.5)
            per_connection = (rss_kib(edge_pid) - before) / n
            listing_ms = await asyncio.to_thread(time_listing, port)
            latencies = sorted(await offer_latencies(sockets))
            await asyncio.gather(*(ws.close() for ws in sockets))
        finally:
            proc.send_signal(2)
            proc.wait(30)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return {"workers": n, "registrations_per_s": round(rate),
            "offer_p50_ms": round(statistics.median(latencies) * 1000, 2),
            "offer_p99_ms": round(p99 * 1000, 2),
            "edge_kib_per_connection": round(per_connection, 1),
            "list_workers_ms": round(listing_ms, 1),
            "bare_kib_per_connection": round(await bare_baseline(n), 1)}


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 5000, 10000]
    for n in sizes:
        if n + 100 > hard:
            print(json.dumps({"workers": n, "skipped": f"fd limit {hard}"}))
            continue
        print(json.dumps(asyncio.run(bench(n))), flush=True)


if __name__ == "__main__":
    main()
