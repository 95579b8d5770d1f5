"""The control block: a small shared-memory record per actor, read by its supervisor.

It lives in a file of the tree's run directory (on tmpfs where there is one), is mapped by the
actor's process and by its supervisor, and outlives every incarnation of the actor. It holds:

- the heartbeat: the actor's event loop writes ``time.monotonic()`` (CLOCK_MONOTONIC, the same
  clock in every process) every ``BEAT`` seconds; a stale beat means a hung actor;
- the batch in flight: before handling a mailbox datagram the actor copies it here with the index
  of the message being handled, so a crash loses nothing: the next incarnation resumes at that
  message, and counts the attempts to set a poison message aside as a dead letter;
- counters the tree snapshot shows (handled, malformed, dead letters).
"""

from __future__ import annotations

import mmap
import os
import struct

from messages.codec import MAX_FRAME_BYTES

BEAT = 0.1  # seconds between heartbeats
_HEADER = struct.Struct("<dIIIIQQQ")  # beat, batch_len, index, attempts, pad, handled, bad, dead
HEADER_SIZE = 64
SIZE = HEADER_SIZE + MAX_FRAME_BYTES


class ControlBlock:
    def __init__(self, file: str, *, create: bool = False) -> None:
        self.file = file
        flags = os.O_RDWR | (os.O_CREAT | os.O_TRUNC if create else 0)
        fd = os.open(file, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, SIZE)
            self.map = mmap.mmap(fd, SIZE)
        finally:
            os.close(fd)

    def close(self) -> None:
        self.map.close()

    def _read(self) -> tuple[float, int, int, int, int, int, int, int]:
        return _HEADER.unpack_from(self.map, 0)

    # -- heartbeat ----------------------------------------------------------------------------
    def beat(self, now: float) -> None:
        struct.pack_into("<d", self.map, 0, now)

    @property
    def last_beat(self) -> float:
        return struct.unpack_from("<d", self.map, 0)[0]

    # -- the batch in flight ------------------------------------------------------------------
    def hold(self, batch: bytes) -> None:
        """Record a datagram about to be handled, from its first message."""
        self.map[HEADER_SIZE:HEADER_SIZE + len(batch)] = batch
        struct.pack_into("<III", self.map, 8, len(batch), 0, 0)

    def at(self, index: int, attempts: int = 0) -> None:
        """The message at ``index`` of the held batch is being handled now, after ``attempts``
        earlier incarnations died handling it."""
        struct.pack_into("<II", self.map, 12, index, attempts)

    def release(self) -> None:
        struct.pack_into("<I", self.map, 8, 0)

    def held(self) -> tuple[bytes, int, int] | None:
        """(batch, index, attempts) left by an incarnation that died mid-batch, or None."""
        _, length, index, attempts, *_ = self._read()
        if not length:
            return None
        return bytes(self.map[HEADER_SIZE:HEADER_SIZE + length]), index, attempts

    # -- counters -----------------------------------------------------------------------------
    def count(self, handled: int = 0, malformed: int = 0, dead: int = 0) -> None:
        *_, h, m, d = self._read()
        struct.pack_into("<QQQ", self.map, 24, h + handled, m + malformed, d + dead)

    def counters(self) -> dict[str, int]:
        *_, h, m, d = self._read()
        return {"handled": h, "malformed": m, "dead_letters": d}
