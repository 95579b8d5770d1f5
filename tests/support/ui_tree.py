"""A worker-shaped tree for the ui actor's tests, run as a real root process:

    python tests/support/ui_tree.py WORKDIR

``worker`` with the real ``ui`` actor and recorder stand-ins for ``udp``, ``stun`` and ``quic``
(each appends every message it receives, as one JSON line, to WORKDIR/<name>.rec). Prints
``READY <ui port>`` once every actor is up.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from actors import Actor, ChildSpec, SocketSpec, SupervisorSpec, run_root  # noqa: E402
from messages.worker import StatusRequest  # noqa: E402

WORKER_ID = "ui-test-worker-0001"
UI_TOKEN = "ui-test-token-0123456789"


class Recorder(Actor):
    """A sibling stand-in: records what it is told, answers StatusRequest."""

    def on_start(self) -> None:
        self.record = open(self.ctx.config["record_to"], "a", buffering=1)  # noqa: SIM115

    def on_receive(self, msg: Any) -> Any:
        plain = dataclasses.is_dataclass(msg) and not isinstance(msg, type)
        fields = dataclasses.asdict(msg) if plain else {}
        self.record.write(json.dumps({"message": type(msg).__name__, **fields}) + "\n")
        if isinstance(msg, StatusRequest):
            return {"recorder": self.ctx.name}
        return None

    def on_stop(self) -> None:
        self.record.close()


def read_records(workdir: str, name: str) -> list[dict[str, Any]]:
    try:
        with open(os.path.join(workdir, f"{name}.rec")) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def spec(workdir: str) -> SupervisorSpec:
    def recorder(name: str) -> ChildSpec:
        return ChildSpec(name, "ui_tree:Recorder",
                         config={"record_to": os.path.join(workdir, f"{name}.rec")})

    ui = ChildSpec("ui", "actors.worker.ui:UiActor",
                   config={"worker_id": WORKER_ID, "ui_token": UI_TOKEN},
                   sockets={"http": SocketSpec("tcp", "127.0.0.1", 0)})
    return SupervisorSpec("worker", (recorder("udp"), recorder("stun"), recorder("quic"), ui),
                          preload=("starlette.applications", "uvicorn"))


def announce(tree: Any) -> None:
    port = tree.bound["worker/ui"]["http"].getsockname()[1]
    print(f"READY {port}", flush=True)


if __name__ == "__main__":
    workdir = sys.argv[1]
    sys.exit(run_root(spec(workdir), rundir=os.path.join(workdir, "run"), on_ready=announce))
