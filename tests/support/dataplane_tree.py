"""Two workers' data planes (udp + quic each) in one tree, run as a real root process:

    python tests/support/dataplane_tree.py WORKDIR

    dp
    ├── alice: udp, quic, and recorders standing in for ui, rendezvous_client, stun
    └── bob:   the same

prints READY once every actor is up. No rendezvous: the test feeds ``PeerOffer``s itself. Each
worker's identity is WORKDIR/<name>.cert.pem and .key.pem (made if missing); each recorder
appends what it receives to WORKDIR/<worker>.<name>.jsonl, one JSON object a line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

# the repo root for the project, this directory for "dataplane_tree:Recorder" (a site-packages
# "tests" package shadows ours)
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import messages.worker  # noqa: E402, F401  (registers the tags the recorders receive)
from actors import Actor, ChildSpec, SocketSpec, SupervisorSpec, run_root  # noqa: E402
from protocol.certs import fingerprint, load_or_create  # noqa: E402

WORKERS = ("alice", "bob")
RECORDERS = ("ui", "rendezvous_client", "stun")
PUNCH_DEADLINE = 2.0


class Recorder(Actor):
    """Appends each message it gets to its file: {"msg": type name, field: value, ...}."""

    def on_start(self) -> None:
        self.out = open(self.ctx.config["record_to"], "a", buffering=1)  # noqa: SIM115

    def on_receive(self, msg: Any) -> Any:
        fields = {f.name: getattr(msg, f.name) for f in dataclasses.fields(msg)}
        self.out.write(json.dumps({"msg": type(msg).__name__, **fields}, default=repr) + "\n")
        return None

    def on_stop(self) -> None:
        self.out.close()


def identity(workdir: str, name: str) -> dict[str, Any]:
    base = Path(workdir)
    cert, key = load_or_create(base / f"{name}.cert.pem", base / f"{name}.key.pem", name)
    return {"cert_pem": cert, "key_pem": key, "fingerprint": fingerprint(cert)}


def worker(workdir: str, name: str) -> SupervisorSpec:
    # A short punch deadline: the tests see within seconds that a resumed path does not fail.
    config = {"worker_id": name, "punch_deadline": PUNCH_DEADLINE, **identity(workdir, name)}
    recorders = tuple(
        ChildSpec(r, "dataplane_tree:Recorder",
                  config={"record_to": os.path.join(workdir, f"{name}.{r}.jsonl")})
        for r in RECORDERS)
    return SupervisorSpec(name, (
        ChildSpec("udp", "actors.worker.udp:UdpActor", config=config,
                  sockets={"udp": SocketSpec("udp", "127.0.0.1", 0)}),
        ChildSpec("quic", "actors.worker.quic:QuicActor", config=config),
        *recorders,
    ))


def spec(workdir: str) -> SupervisorSpec:
    return SupervisorSpec("dp", tuple(worker(workdir, n) for n in WORKERS),
                          preload=("aioquic.quic.connection", "protocol.tunnel.connection",
                                   "protocol.udp.holepunch", "actors.worker.quic"))


if __name__ == "__main__":
    workdir = sys.argv[1]
    code = run_root(spec(workdir), rundir=os.path.join(workdir, "run"),
                    on_ready=lambda _t: print("READY", flush=True))
    sys.exit(code)
