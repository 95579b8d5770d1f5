"""Worker-shaped trees for the control-plane tests, run as a real root process:

    python tests/support/ctl_tree.py NAME WORKDIR

reads the worker config from WORKDIR/config.json and prints ``READY`` once every actor is up.
The supervisor is ``w``, with the five worker children; the actors under test are real, their
siblings are stand-ins:

- ``stun``: the real StunActor; ``udp`` is ``UdpStandIn`` (a real UDP socket bound by the
  supervisor, STUN datagrams forwarded to ``stun``); the others are ``Recorder``s.
- ``stun_udp``: the same with the real UdpActor.
- ``rdv``: the real RendezvousClient; every sibling is a ``Recorder``.

A ``Recorder`` answers ``StatusRequest`` with ``{"seen": [...]}``: every other message it got,
as ``{"type": class name, **fields}``, in order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from actors import ChildSpec, SocketSpec, SupervisorSpec, run_root  # noqa: E402
from actors.actor import Actor  # noqa: E402
from messages.worker import StatusRequest, UdpReceived, UdpSend  # noqa: E402

HERE = "ctl_tree"  # tests/support/ is on sys.path: the script's own directory


class Recorder(Actor):
    def on_start(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def on_receive(self, msg: Any) -> Any:
        if isinstance(msg, StatusRequest):
            return {"seen": self.seen}
        self.seen.append({"type": type(msg).__name__, **dataclasses.asdict(msg)})
        return None


class UdpStandIn(Recorder):
    """The udp actor's part the stun actor needs: RFC 7983 §7 puts STUN at first bytes 0-3."""

    def on_start(self) -> None:
        super().on_start()
        self.sock: socket.socket = self.ctx.sockets["udp"]
        self.sock.setblocking(False)
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self.readable)

    def readable(self) -> None:
        while True:
            try:
                data, (host, port) = self.sock.recvfrom(2048)
            except BlockingIOError:
                return
            if data and data[0] < 4:
                self.ctx.ref("stun").tell(UdpReceived(host, port, [data]))

    def on_receive(self, msg: Any) -> Any:
        if isinstance(msg, UdpSend):
            for data in msg.payloads:
                self.sock.sendto(data, (msg.host, msg.port))
        if isinstance(msg, StatusRequest):  # the local address as the real UdpActor gives it
            host, port = self.sock.getsockname()[:2]
            return {"seen": self.seen, "local_host": host, "local_port": port}
        return super().on_receive(msg)


def spec(name: str, config: dict[str, Any]) -> SupervisorSpec:
    real = {"stun": "actors.worker.stun:StunActor",
            "rendezvous_client": "actors.worker.rendezvous_client:RendezvousClient"}
    under_test = {"stun": "stun", "stun_udp": "stun", "rdv": "rendezvous_client"}[name]
    udp = {"stun": f"{HERE}:UdpStandIn", "stun_udp": "actors.worker.udp:UdpActor"}.get(name)
    children = []
    for child in ("udp", "stun", "quic", "rendezvous_client", "ui"):
        actor = real[child] if child == under_test else f"{HERE}:Recorder"
        sockets = {}
        if child == "udp" and udp:
            actor = udp
            sockets = {"udp": SocketSpec("udp", config["udp_host"], config["udp_port"])}
        children.append(ChildSpec(child, actor, config=config, sockets=sockets, shutdown=3.0))
    return SupervisorSpec("w", tuple(children))


def start(name: str, workdir: Path, config: dict[str, Any]) -> Any:
    """Start tree ``name`` with ``config``; a RunningTree (stop it with stop_tree)."""
    from tests.support.processes import RunningTree

    (workdir / "config.json").write_text(json.dumps(config))
    log = workdir / "tree.log"
    proc = subprocess.Popen([sys.executable, __file__, name, str(workdir)],
                            stdout=subprocess.PIPE, stderr=open(log, "w"),  # noqa: SIM115
                            text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "READY":  # bounded by the tree's start timeouts
        proc.kill()
        proc.wait()
        raise AssertionError(f"tree {name} did not start: {log.read_text()[-2000:]}")
    return RunningTree(proc, workdir, log)


if __name__ == "__main__":
    tree, workdir = sys.argv[1], sys.argv[2]
    config = json.loads(Path(workdir, "config.json").read_text())
    sys.exit(run_root(spec(tree, config), rundir=os.path.join(workdir, "run"),
                      on_ready=lambda _t: print("READY", flush=True)))
