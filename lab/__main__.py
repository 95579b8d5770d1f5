"""``python -m lab up|down``: build a NAT lab and watch its two workers, or clean up leftovers."""

from __future__ import annotations

import argparse
import asyncio
import signal
import time

from lab import observe
from lab.lab import WORKERS, Lab, raise_on_sigterm
from lab.nat import BEHAVIOURS
from lab.netns import clean, usable


async def watch(lab: Lab, name: str, started: float) -> None:
    """Print the state events of one worker's UI as they come."""
    async with observe.page(lab.host_ns(name)) as page:
        await page.send(type="ui_client_hello")
        while True:
            event = await page.expect(lambda e: e.get("type") in observe.STATE_EVENTS,
                                      3600, "state event")
            print(f"{time.monotonic() - started:7.2f} s  {name:<5}  {observe.describe(event)}",
                  flush=True)


async def watch_all(lab: Lab, seconds: float | None, started: float) -> None:
    tasks = [asyncio.create_task(watch(lab, name, started)) for name in WORKERS.values()]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), seconds)
    except TimeoutError:
        pass


def report(lab: Lab) -> None:
    for name in WORKERS.values():
        print(f"{name}: {observe.snapshot(lab.host_ns(name))}")
    for site in ("a", "b"):
        print(f"conntrack -L in router {site}:\n{lab.net.conntrack(site).rstrip()}")


def cmd_up(args: argparse.Namespace) -> None:
    if (why := usable()) is not None:
        raise SystemExit(f"lab: {why}")
    raise_on_sigterm()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    lab = Lab(args.nat_a, args.nat_b, args.delay_ms, args.loss, stund=args.stund)
    started = time.monotonic()
    try:
        lab.up()
        print(f"lab {lab.net.run} up: NAT a {args.nat_a}, NAT b {args.nat_b}, delay "
              f"{args.delay_ms} ms and loss {args.loss}% per WAN link direction "
              f"({lab.net.delay_mechanism}); logs in {lab.workdir}", flush=True)
        for name in WORKERS.values():
            print(f"  {name}: ip netns exec {lab.host_ns(name)} curl 127.0.0.1:8080/health")
        asyncio.run(watch_all(lab, args.seconds, started))
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        try:
            if lab.workers:
                report(lab)
        finally:
            lab.close()
    print(f"lab {lab.net.run} down; logs kept in {lab.workdir}")


def cmd_down(args: argparse.Namespace) -> None:
    gone = clean(everything=args.all)
    print("\n".join(f"deleted {ns}" for ns in gone) or "no leftover lab namespaces")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build a lab, run it until Ctrl-C (or --seconds)")
    up.add_argument("--nat-a", choices=BEHAVIOURS, default="port-restricted")
    up.add_argument("--nat-b", choices=BEHAVIOURS, default="port-restricted")
    up.add_argument("--delay-ms", type=float, default=0.0,
                    help="one-way delay on each WAN link, each direction")
    up.add_argument("--loss", type=float, default=0.0,
                    help="percent of packets lost on each WAN link, each direction")
    up.add_argument("--stund", action="store_true",
                    help="run stund on two addresses and point the workers' STUN at it")
    up.add_argument("--seconds", type=float, default=None, help="stop after this long")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="delete the namespaces (and processes) of dead labs")
    down.add_argument("--all", action="store_true", help="also those of labs still running")
    down.set_defaults(func=cmd_down)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
