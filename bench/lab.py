"""NAT-lab benchmark: from the later worker's registration to the QUIC tunnel up on both sides,
through two NAT routers with ``--delay-ms`` on each WAN link (40 ms by default), per NAT pair,
beside the goal 3 x RTT + 100 ms (RTT: host to host, four link crossings of the delay).

    sudo python bench/lab.py [--delay-ms 40] [--runs 1] [--pairs full-cone:full-cone,...]

Alice starts first; once the rendezvous registry has her "connected -> ready", bob starts. The
times come from the JSON log lines every process writes with the same wall clock: the
registry's "worker bob: connected -> ready", and each side's "tunnel ... authenticating -> up".
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.lab import Lab  # noqa: E402
from lab.nat import BEHAVIOURS  # noqa: E402
from lab.netns import usable  # noqa: E402
from lab.services import Service  # noqa: E402

WAIT = 60.0


def stamp(service: Service, actor: str, text: str) -> list[float]:
    return [r["ts"] for r in service.records()
            if str(r.get("actor", "")).endswith(actor) and text in str(r.get("msg", ""))]


def first(values: list[float]) -> float | None:
    return values[0] if values else None


def wait_for(found: Callable[[], float | None], what: str) -> float:
    deadline = time.monotonic() + WAIT
    while (value := found()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {WAIT:.0f} s")
        time.sleep(0.05)
    return value


def one_run(nat_a: str, nat_b: str, delay_ms: float) -> float:
    """ms from bob's registration to the tunnel up on both sides."""
    lab = Lab(nat_a, nat_b, delay_ms).up(start_workers=False)
    try:
        assert lab.rendezvous is not None
        rdv = lab.rendezvous
        lab.start_workers("alice")
        wait_for(lambda: first(stamp(rdv, "/registry", "alice: connected -> ready")),
                 "registration of alice")
        lab.start_workers("bob")
        ready = wait_for(lambda: first(stamp(rdv, "/registry", "bob: connected -> ready")),
                         "registration of bob")

        def both_up() -> float | None:
            ends = [stamp(lab.workers[n], "/quic", "authenticating -> up") for n in
                    ("alice", "bob")]
            return max(min(e) for e in ends) if all(ends) else None
        return (wait_for(both_up, "tunnel up on both sides") - ready) * 1000
    finally:
        lab.close()
        lab.remove_workdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--delay-ms", type=float, default=40.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--pairs", default=",".join(
        f"{a}:{b}" for a, b in itertools.combinations_with_replacement(BEHAVIOURS, 2)))
    args = parser.parse_args()
    if (why := usable()) is not None:
        raise SystemExit(f"bench/lab.py: {why}")
    goal = 3 * (4 * args.delay_ms) + 100
    print(f"registration -> tunnel up, {args.delay_ms:g} ms per WAN link direction "
          f"(RTT {4 * args.delay_ms:g} ms; goal 3 x RTT + 100 ms = {goal:g} ms)")
    for pair in args.pairs.split(","):
        nat_a, nat_b = pair.split(":")
        times, failures = [], []
        for _ in range(args.runs):
            try:
                times.append(one_run(nat_a, nat_b, args.delay_ms))
            except TimeoutError as exc:
                failures.append(str(exc))
        shown = (f"median {statistics.median(times):7.1f} ms, max {max(times):7.1f} ms"
                 if times else "no tunnel")
        print(f"  {nat_a:>15} x {nat_b:<15} {shown}  (goal {goal:g} ms; "
              f"{len(times)}/{args.runs} runs up{'; ' + failures[0] if failures else ''})",
              flush=True)


if __name__ == "__main__":
    main()
