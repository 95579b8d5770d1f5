"""The rendezvous service's supervisor tree.

    rendezvous (one_for_one)
    ├── registry   worker records            rebuilt from the edge's ledger after a crash
    ├── pairing    matchmaking and offers    rebuilt from the edge's ledger after a crash
    ├── stun       STUN Binding responder    on a UDP socket bound once by the supervisor
    └── edge       Starlette + uvicorn       on a TCP socket bound once by the supervisor

one_for_one: the edge holds every connection, so a crash of the registry or the pairing actor
must not take the edge (and every worker's connection) down with it.
"""

from __future__ import annotations

from collections.abc import Sequence

from actors.spec import ChildSpec, SocketSpec, SupervisorSpec
from protocol.rendezvous.registry import MAX_WORKERS

# What the fork server imports once, so a restarted edge is serving again in milliseconds.
PRELOAD = ("actors.rendezvous.edge", "actors.rendezvous.registry", "actors.rendezvous.pairing",
           "actors.rendezvous.stun")


def rendezvous_spec(host: str, port: int, stun_port: int, *, token: str | None = None,
                    trusted_proxies: Sequence[str] = (),
                    max_workers: int = MAX_WORKERS, admin_token: str | None = None,
                    allow_unproven: bool = True, **edge_tuning: float) -> SupervisorSpec:
    """``edge_tuning``: identity_grace, identity_window, header_timeout, per_address."""
    limits = {"max_workers": max_workers}
    edge_config = limits | edge_tuning | {
        "token": token, "admin_token": admin_token, "allow_unproven": allow_unproven,
        "trusted_proxies": list(trusted_proxies)}
    return SupervisorSpec("rendezvous", (
        ChildSpec("registry", "actors.rendezvous.registry:RegistryActor", config=limits),
        ChildSpec("pairing", "actors.rendezvous.pairing:PairingActor"),
        ChildSpec("stun", "actors.rendezvous.stun:StunActor",
                  sockets={"stun": SocketSpec("udp", host, stun_port)}),
        # liveness 10 s: a storm of thousands of handshakes may keep the edge's loop busy
        ChildSpec("edge", "actors.rendezvous.edge:EdgeActor", config=edge_config, liveness=10.0,
                  sockets={"http": SocketSpec("tcp", host, port)}),
    ), preload=PRELOAD)
