"""What the udp and quic actors share in driving their sans-I/O cores: the clock that gives the
cores their ``now``, and the batches in which datagrams cross between the two actors' mailboxes.
"""

from __future__ import annotations

import time

# The cores' clock. Not loop.time(): uvloop's has millisecond resolution, and a loopback RTT
# is well under a millisecond.
clock = time.monotonic

# One UdpReceived stays well inside a 64 KiB mailbox datagram (messages.codec.MAX_FRAME_BYTES).
MAX_BATCH_BYTES = 48 * 1024


def batches(payloads: list[bytes]) -> list[list[bytes]]:
    """``payloads`` cut into lists of at most MAX_BATCH_BYTES each."""
    out: list[list[bytes]] = [[]]
    size = 0
    for payload in payloads:
        if out[-1] and size + len(payload) > MAX_BATCH_BYTES:
            out.append([])
            size = 0
        out[-1].append(payload)
        size += len(payload)
    return out
