"""What the worker's actors share in driving their sans-I/O cores.

- ``clock``: the cores' ``now``.
- ``batches``: how datagrams cross between the udp and quic actors' mailboxes.
- ``CoreDriver``: the one loop that drives a core from an actor, as aioquic's asyncio shell drives
  a ``QuicConnection``: after each input, drain the events; send what the core has to send; re-arm
  one timer, and on it call ``handle_timer(now)``.
- State files: what an actor keeps across its restarts, one msgpack file per actor and thing,
  under the run directory (``ctx.rundir``), so they last as long as the run does. A write replaces
  the file atomically; an unreadable file reads as nothing saved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

import msgpack

from messages.worker import UdpSend
from protocol.stun import Address

log = logging.getLogger(__name__)

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


def send_through_udp(udp: Any, datagrams: list[tuple[bytes, Address]]) -> None:
    """Datagrams for the udp actor (``udp``, its Ref) to send: one ``UdpSend`` per destination
    and batch, so the mailbox hop carries them in as few messages as fit."""
    by_addr: dict[Address, list[bytes]] = {}
    for data, addr in datagrams:
        by_addr.setdefault(addr, []).append(data)
    for (host, port), payloads in by_addr.items():
        for batch in batches(payloads):
            udp.tell(UdpSend(host, port, batch))


class Core(Protocol):
    """The aioquic-shaped API of every sans-I/O core the worker drives."""

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...

    def next_event(self) -> Any: ...


class CoreDriver:
    """Feeds nothing itself: the actor feeds its core, then calls ``after_input`` (send at the
    end of this loop iteration, so a burst of input leaves in one batch) or ``flush`` (now)."""

    def __init__(self, core: Core, send: Callable[[list[tuple[bytes, Address]]], None],
                 on_event: Callable[[Any], None]) -> None:
        self.core, self.send, self.on_event = core, send, on_event
        self.loop = asyncio.get_running_loop()
        self.timer: asyncio.TimerHandle | None = None
        self.flush_due = False

    def after_input(self) -> None:
        """Drain events now; send and re-arm the timer once this loop iteration is done."""
        self.drain()
        if not self.flush_due:
            self.flush_due = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_due = False
        datagrams = self.core.datagrams_to_send(clock())
        if datagrams:
            self.send(datagrams)
        self.drain()
        self.arm_timer()

    def drain(self) -> None:
        while (event := self.core.next_event()) is not None:
            self.on_event(event)

    def arm_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        when = self.core.get_timer()
        if when is not None:
            self.timer = self.loop.call_later(max(0.0, when - clock()), self.on_timer)

    def on_timer(self) -> None:
        self.timer = None
        self.core.handle_timer(clock())
        self.drain()
        self.flush()

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def state_file(rundir: str, path: str, what: str) -> str:
    """Where actor ``path`` keeps ``what`` across its restarts (the run directory's life)."""
    return os.path.join(rundir, f"{path.replace('/', '.')}.{what}.state")


def save_state(file: str, state: Any) -> None:
    """Replace ``file`` atomically: a kill -9 mid-write leaves the old state, never half."""
    temp = f"{file}.{os.getpid()}.tmp"
    with open(temp, "wb") as out:
        out.write(msgpack.packb(state, use_bin_type=True))
    os.replace(temp, file)


def load_state(file: str) -> Any:
    try:
        with open(file, "rb") as f:
            return msgpack.unpackb(f.read(), raw=False)
    except FileNotFoundError:
        return None
    except (ValueError, msgpack.UnpackException):
        log.warning("unreadable state file %s ignored", file)
        return None


def remove_state(file: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(file)


def plain(msg: Any) -> dict[str, Any] | None:
    """A message dataclass as the dict a state file keeps (None stays None)."""
    return None if msg is None else {f: getattr(msg, f) for f in msg.__dataclass_fields__}
