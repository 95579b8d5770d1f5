"""The rendezvous tree run as a real root process for the tests:

    python tests/support/rdv_tree.py WORKDIR [--token T] [--max-workers N] [--trusted-proxy ADDR]...
        [--admin-token T] [--no-unproven] [--tune NAME=VALUE]...

binds the HTTP and STUN ports on 127.0.0.1 (port 0: the kernel picks) and prints
``READY <http_port> <stun_port>`` once every actor is up. The run directory is WORKDIR/run.

Imported by the tests: ``start_rendezvous``/``stop_rendezvous`` and a small worker client
speaking the original JSON over a real ``websockets`` connection, every wait bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from actors import run_root  # noqa: E402
from actors.rendezvous.tree import PRELOAD, rendezvous_spec  # noqa: E402

STEP = float(os.environ.get("TEST_TIME_SCALE", "1")) * 5.0  # seconds any one wait may take


@dataclass
class Rendezvous:
    proc: subprocess.Popen[str]
    http_port: int
    stun_port: int
    workdir: Path
    token: str | None = None  # presented to /debug/list_workers

    @property
    def rundir(self) -> str:
        return str(self.workdir / "run")

    def url(self, worker_id: str, query: str = "") -> str:
        return f"ws://127.0.0.1:{self.http_port}/ws/register/{worker_id}{query}"

    def get(self, path: str, headers: dict[str, str] | None = None) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}",
                                         headers=headers or {})
        with urllib.request.urlopen(request, timeout=STEP) as response:
            return json.loads(response.read())

    async def workers(self) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return (await asyncio.to_thread(self.get, "/debug/list_workers", headers))["workers"]


def start_rendezvous(workdir: Path, *flags: str) -> Rendezvous:
    log = open(workdir / "rendezvous.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, __file__, str(workdir), *flags],
                            stdout=subprocess.PIPE, stderr=log, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()  # bounded by the tree's own start timeouts
    if not line or line[0] != "READY":
        proc.kill()
        log_text = (workdir / "rendezvous.log").read_text()
        raise AssertionError(f"rendezvous did not start: {log_text[-2000:]}")
    token = flags[flags.index("--token") + 1] if "--token" in flags else None
    return Rendezvous(proc, int(line[1]), int(line[2]), workdir, token)


def stop_rendezvous(rdv: Rendezvous) -> None:
    """SIGINT, then check that no process of the tree is left (``processes.stop_tree``)."""
    from tests.support.processes import RunningTree, stop_tree

    stop_tree(RunningTree(rdv.proc, rdv.workdir, rdv.workdir / "rendezvous.log"))


class Worker:
    """A worker of the original protocol, as far as the rendezvous service sees one."""

    def __init__(self, worker_id: str, ws: Any) -> None:
        self.worker_id, self.ws = worker_id, ws
        self.backlog: list[dict[str, Any]] = []  # received, not yet expected

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(message if isinstance(message, (str, bytes)) else json.dumps(message))

    async def recv(self, timeout: float = STEP) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def expect(self, kind: str) -> dict[str, Any]:
        """The next message of ``kind``; others wait in ``backlog`` (the service does not order
        an ack from the registry against an offer from the pairing actor)."""
        for message in self.backlog:
            if message["type"] == kind:
                self.backlog.remove(message)
                return message
        while (message := await self.recv())["type"] != kind:
            self.backlog.append(message)
        return message

    async def endpoint(self, port: int, ip: str = "127.0.0.1", **extra: Any) -> dict[str, Any]:
        await self.send({"type": "update_udp_endpoint", "udp_ip": ip, "udp_port": port, **extra})
        return await self.expect("udp_endpoint_ack")

    async def echo(self, payload: Any = "ping") -> None:
        await self.send({"type": "echo_request", "payload": payload})
        assert (await self.expect("echo_response"))["payload"] == payload

    async def silent(self, seconds: float = 0.2) -> bool:
        """True if nothing arrives within ``seconds``."""
        assert not self.backlog, f"{self.worker_id} got an unexpected {self.backlog}"
        try:
            message = await asyncio.wait_for(self.ws.recv(), seconds)
        except TimeoutError:
            return True
        raise AssertionError(f"{self.worker_id} got an unexpected {message}")

    async def closed_with(self) -> tuple[int | None, str]:
        await asyncio.wait_for(self.ws.wait_closed(), STEP)
        return self.ws.close_code, self.ws.close_reason

    async def close(self) -> None:
        await asyncio.wait_for(self.ws.close(), STEP)

    async def prove(self, identity: tuple[bytes, bytes], worker_id: str | None = None) -> None:
        """Answer the handshake's identity challenge with ``identity`` (cert, key PEM)."""
        from protocol.rendezvous.client_wire import identity_proof
        from protocol.rendezvous.identity import CHALLENGE_HEADER

        nonce = self.ws.response.headers[CHALLENGE_HEADER]
        await self.send(identity_proof(worker_id or self.worker_id, nonce, *identity))


def new_identity() -> tuple[bytes, bytes]:
    """A fresh certificate and key, PEM: a worker's identity."""
    from protocol.certs import generate_self_signed

    return generate_self_signed("test-worker")


async def connect(rdv: Rendezvous, worker_id: str, query: str = "",
                  identity: tuple[bytes, bytes] | None = None, **kw: Any) -> Worker:
    """A connected worker; with ``identity`` it proves it first and waits for the answer."""
    from websockets.asyncio.client import connect as ws_connect

    ws = await asyncio.wait_for(ws_connect(rdv.url(worker_id, query), **kw), STEP)
    OPENED.append(worker := Worker(worker_id, ws))
    if identity is not None:
        await worker.prove(identity)
        await worker.expect("identity_accepted")
    return worker


OPENED: list[Worker] = []  # closed by ``close_all`` whatever a test's outcome


async def close_all() -> None:
    while OPENED:
        await OPENED.pop().ws.close()


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a test's client side, bounded in time, closing every worker connection it opened."""
    from tests.support.processes import within

    async def bounded() -> Any:
        try:
            return await asyncio.wait_for(coro, within(20))
        finally:
            await asyncio.wait_for(close_all(), within(5))
    return asyncio.run(bounded())


def announce(tree) -> None:  # noqa: ANN001
    http = tree.bound["rendezvous/edge"]["http"].getsockname()[1]
    stun = tree.bound["rendezvous/stun"]["stun"].getsockname()[1]
    print(f"READY {http} {stun}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--token")
    parser.add_argument("--max-workers", type=int, default=1000)
    parser.add_argument("--trusted-proxy", action="append", default=[])
    parser.add_argument("--admin-token")
    parser.add_argument("--no-unproven", action="store_true")
    parser.add_argument("--tune", action="append", default=[],
                        help="NAME=SECONDS: identity_grace, identity_window, header_timeout, "
                             "per_address")
    args = parser.parse_args()
    tuning = {name: float(value) for name, value in (item.split("=") for item in args.tune)}
    spec = rendezvous_spec("127.0.0.1", 0, 0, token=args.token, max_workers=args.max_workers,
                           trusted_proxies=args.trusted_proxy, admin_token=args.admin_token,
                           allow_unproven=not args.no_unproven, **tuning)
    sys.exit(run_root(spec, rundir=os.path.join(args.workdir, "run"), preload=PRELOAD,
                      on_ready=announce))
