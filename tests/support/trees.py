"""Trees of probe actors for the runtime tests, run as a real root process:

    python tests/support/trees.py NAME WORKDIR

prints READY once every actor is up. Probe actors record what they handle in WORKDIR/<name>.rec.
"""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from actors import ChildSpec, Strategy, SupervisorSpec, run_root  # noqa: E402


def probe(name: str, workdir: str, **kw: Any) -> ChildSpec:
    kw.setdefault("liveness", 1.0)
    kw.setdefault("config", {"record_to": os.path.join(workdir, f"{name}.rec")})
    return ChildSpec(name, "tests.support.probes:ProbeActor", **kw)


def sender(workdir: str) -> ChildSpec:
    """Tells a whole stream from one handler: a long message, on a loaded machine, by design."""
    return probe("send", workdir, liveness=30.0)


def spec(name: str, workdir: str) -> SupervisorSpec:
    trio = (probe("a", workdir), probe("b", workdir), probe("c", workdir))
    if name == "basic":
        sub = SupervisorSpec("sub", (probe("c", workdir),), liveness=2.0)
        blocking = ChildSpec("blk", "tests.support.probes:BlockingProbe", liveness=1.0)
        return SupervisorSpec("t", (probe("a", workdir), blocking, sub))
    if name == "all":
        return SupervisorSpec("t", trio, strategy=Strategy.ONE_FOR_ALL)
    if name == "rest":
        return SupervisorSpec("t", trio, strategy=Strategy.REST_FOR_ONE)
    if name == "stream":  # a sender, and a receiver that is killed again and again
        receiver = probe("recv", workdir, config={
            "record_to": os.path.join(workdir, "recv.rec"), "work_us": 30})
        return SupervisorSpec("t", (sender(workdir), receiver), max_restarts=10_000,
                              period=1.0, backoff=0.0)
    if name == "flood":  # a receiver whose every message costs 0.1 ms
        receiver = probe("recv", workdir, config={
            "record_to": os.path.join(workdir, "recv.rec"), "work_us": 100})
        return SupervisorSpec("t", (sender(workdir), receiver))
    if name == "slow":  # handlers that block for seconds, with the liveness to allow it
        return SupervisorSpec("t", (probe("a", workdir, liveness=10.0),))
    if name == "fragile":
        return SupervisorSpec("t", (probe("a", workdir),), max_restarts=2, period=60.0,
                              backoff=0.01)
    raise SystemExit(f"unknown tree {name}")


if __name__ == "__main__":
    tree, workdir = sys.argv[1], sys.argv[2]
    code = run_root(spec(tree, workdir), rundir=os.path.join(workdir, "run"),
                    on_ready=lambda _t: print("READY", flush=True))
    sys.exit(code)
