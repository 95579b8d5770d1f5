"""The worker's supervisor tree.

    worker (one_for_one)
    ├── udp                owns the UDP socket (bound once here, so restarts keep the port and
    │                      the NAT mapping): demultiplexing, hole punching, keepalives, ping
    ├── stun               the public mapping of that socket; NAT type via pystun3
    ├── quic               the authenticated QUIC tunnel over the punched path
    ├── rendezvous_client  the WebSocket to the rendezvous service
    ├── benchmark          throughput runs to the peer (UDP through udp, QUIC through quic)
                           and the receiver of the peer's UDP runs
    └── ui                 Starlette + uvicorn: /, /health, /api/tree, /ui_ws

Siblings address each other by name (``self.ctx.ref("quic")``), so the tree works under any
supervisor name (``worker`` alone, ``demo/alice`` in the demo).
"""

from __future__ import annotations

from actors.spec import ChildSpec, SocketSpec, SupervisorSpec
from actors.worker.settings import WorkerSettings

# Heavy imports the fork server does once, so a restarted worker actor starts in milliseconds.
PRELOAD = ("aioquic.quic.connection", "cryptography.x509", "starlette.applications",
           "uvicorn", "websockets.asyncio.client", "protocol.tunnel.connection",
           "protocol.udp.holepunch")


def worker_spec(settings: WorkerSettings, name: str = "worker") -> SupervisorSpec:
    actor = lambda module, cls, signs=False, **kw: ChildSpec(  # noqa: E731
        module, f"actors.worker.{module}:{cls}", config=settings.config(signs=signs), **kw)
    return SupervisorSpec(name, (
        actor("udp", "UdpActor",
              sockets={"udp": SocketSpec("udp", settings.udp_host, settings.udp_port)}),
        actor("stun", "StunActor"),
        actor("quic", "QuicActor", signs=True),
        actor("rendezvous_client", "RendezvousClient", signs=True),  # the identity proof
        actor("benchmark", "BenchmarkActor"),
        actor("ui", "UiActor",
              sockets={"http": SocketSpec("tcp", settings.ui_host, settings.ui_port)}),
    ), preload=PRELOAD)
