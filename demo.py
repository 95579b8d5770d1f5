"""The demo: one rendezvous service and two workers on loopback, fully offline.

    demo (one_for_one)
    ├── rendezvous   registry, pairing, stun (the embedded STUN responder), edge
    ├── alice        udp, stun, quic, rendezvous_client, ui
    └── bob          udp, stun, quic, rendezvous_client, ui

The rendezvous service's embedded STUN responder stands in for a public STUN server. Ports are
picked free at start; the two UI addresses are printed once everything is up.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from dataclasses import dataclass

from actors.spec import SupervisorSpec
from actors.worker.settings import from_env
from actors.worker.tree import worker_spec

HOST = "127.0.0.1"
WORKERS = ("alice", "bob")
BENCHMARK_ENV = ("BENCHMARK_GCS_URL", "BENCHMARK_FILE")  # passed on to both workers


@dataclass(frozen=True)
class Demo:
    spec: SupervisorSpec
    rendezvous_url: str
    ui_urls: dict[str, str]


def free_port(kind: int) -> int:
    """A port free right now on loopback (the demo binds it a moment later)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def demo(http_port: int = 0, stun_port: int = 0) -> Demo:
    from actors.rendezvous.tree import rendezvous_spec

    http_port = http_port or free_port(socket.SOCK_STREAM)
    stun_port = stun_port or free_port(socket.SOCK_DGRAM)
    url = f"http://{HOST}:{http_port}"
    workers, uis = [], {}
    for name in WORKERS:
        ui_port = free_port(socket.SOCK_STREAM)
        cert_dir = tempfile.mkdtemp(prefix=f"p2p-demo-{name}-")
        try:  # a fresh identity per run: the key pair lives in memory only
            settings = from_env({
                "RENDEZVOUS_SERVICE_URL": url, "STUN_HOST": HOST, "STUN_PORT": str(stun_port),
                "UDP_HOST": HOST, "INTERNAL_UDP_PORT": "0", "UI_HOST": HOST,
                "PORT": str(ui_port), "WORKER_ID": name, "PING_INTERVAL_SEC": "5",
                **{k: v for k in BENCHMARK_ENV if (v := os.environ.get(k))},
            }, cert_dir=cert_dir)
        finally:
            shutil.rmtree(cert_dir, ignore_errors=True)
        workers.append(worker_spec(settings, name=name))
        uis[name] = settings.ui_url
    spec = SupervisorSpec("demo", (rendezvous_spec(HOST, http_port, stun_port), *workers))
    return Demo(spec, url, uis)
