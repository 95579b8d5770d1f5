"""Trees of probe actors for the runtime tests, run as a real root process:

    python tests/support/trees.py NAME WORKDIR

prints READY once every actor is up. Probe actors record what they handle in WORKDIR/<name>.rec.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from actors import ChildSpec, Strategy, SupervisorSpec, run_root  # noqa: E402


def probe(name: str, workdir: str, **kw: object) -> ChildSpec:
    return ChildSpec(name, "tests.support.probes:ProbeActor", liveness=1.0,
                     config={"record_to": os.path.join(workdir, f"{name}.rec")}, **kw)


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
    if name == "fragile":
        return SupervisorSpec("t", (probe("a", workdir),), max_restarts=2, period=60.0,
                              backoff=0.01)
    raise SystemExit(f"unknown tree {name}")


if __name__ == "__main__":
    tree, workdir = sys.argv[1], sys.argv[2]
    code = run_root(spec(tree, workdir), rundir=os.path.join(workdir, "run"),
                    on_ready=lambda _t: print("READY", flush=True))
    sys.exit(code)
