"""A WAN link with delay and loss, for kernels without ``sch_netem``: two TUN devices, one in
each namespace, and this process between them moving IP packets after ``delay`` and dropping a
``loss`` fraction in each direction. Addresses are untouched (unlike a UDP relay), so NAT and
conntrack on either side see exactly what a wire would carry.

    python -m lab.delayline NS_A DEV_A NS_B DEV_B --delay-ms 40 --loss 5

TUN devices carry whole IP packets with checksums done (no offloads are negotiated), so nothing
here parses or rewrites a packet. Prints READY once both devices exist; exits on SIGTERM or
when its stdin closes (the process that started it, holding the other end, is gone).
"""

from __future__ import annotations

import argparse
import collections
import fcntl
import os
import random
import select
import signal
import struct
import sys
import time

from lab.netns import call_in

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
MAX_PACKET = 65535
MAX_QUEUED = 4096  # packets in flight on one link; a flood beyond it is dropped, as a queue would


def open_tun(ns: str, name: str) -> int:
    def create() -> int:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
        return fd
    return call_in(ns, create)


class DelayLine:
    """Packets read from one end, written to the other ``delay`` seconds later, or dropped."""

    def __init__(self, a: int, b: int, delay: float, loss: float, seed: int | None) -> None:
        self.peer = {a: b, b: a}
        self.delay, self.loss = delay, loss
        self.random = random.Random(seed)
        self.queue: collections.deque[tuple[float, int, bytes]] = collections.deque()
        self.counts: collections.Counter[str] = collections.Counter()

    def receive(self, fd: int, now: float) -> None:
        while True:
            try:
                packet = os.read(fd, MAX_PACKET)
            except BlockingIOError:
                return
            if self.random.random() < self.loss or len(self.queue) >= MAX_QUEUED:
                self.counts["dropped"] += 1
            else:
                self.queue.append((now + self.delay, self.peer[fd], packet))

    def release(self, now: float) -> None:
        while self.queue and self.queue[0][0] <= now:
            _, fd, packet = self.queue.popleft()
            try:
                os.write(fd, packet)
                self.counts["forwarded"] += 1
            except OSError:  # the device went down: the lab is being torn down
                self.counts["lost_on_write"] += 1

    def timeout(self, now: float) -> float | None:
        return max(0.0, self.queue[0][0] - now) if self.queue else None

    def run(self, owner: int) -> None:
        """Until ``owner`` (a pipe from whoever started us) reads as closed."""
        fds = [*self.peer, owner]
        while True:
            ready, _, _ = select.select(fds, [], [], self.timeout(time.monotonic()))
            now = time.monotonic()
            if owner in ready and not os.read(owner, 4096):
                return
            for fd in ready:
                if fd != owner:
                    self.receive(fd, now)
            self.release(now)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for side in ("a", "b"):
        parser.add_argument(f"ns_{side}")
        parser.add_argument(f"dev_{side}")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--loss", type=float, default=0.0, help="percent, each direction")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    line = DelayLine(open_tun(args.ns_a, args.dev_a), open_tun(args.ns_b, args.dev_b),
                     args.delay_ms / 1000, args.loss / 100, args.seed)
    print("READY", flush=True)
    try:
        line.run(sys.stdin.fileno())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
