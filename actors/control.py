"""The control block: a small shared-memory record per actor, read by its supervisor.

It lives in a file of the tree's run directory (on tmpfs where there is one), is mapped by the
actor's process and by its supervisor, and outlives every incarnation of the actor. It holds:

- the heartbeat: ``time.monotonic()`` (CLOCK_MONOTONIC, the same clock in every process), written
  by the actor's event loop every ``BEAT`` seconds and before every message it handles; a stale
  beat means an actor stuck in one message, or a loop that stopped;
- the batch in flight: a mailbox datagram is copied here *before* it leaves the kernel queue, with
  the index of the message being handled, so no instant exists where a message is in neither place
  (see ``actors.inbox``); the next incarnation resumes at that message and counts the attempts, to
  set a poison message aside as a dead letter;
- counters the tree snapshot shows (handled, malformed, dead letters, expired asks).

Every field is one aligned 8-byte word written with a single store (a ``memoryview`` cast, which
copies the value in one piece). ``struct.pack_into`` is not used for them: it zeroes its target
before packing, so a reader in another process could see a beat of 0.0 — which made healthy actors
look silent since their start and get killed as hung — and a process killed between the zeroing
and the packing would leave a torn record behind.

The in-flight record is one word, ``length | index << 20 | attempts << 40 | dequeued << 48``,
so it changes atomically: a reader (the next incarnation) sees either the old record or the new one.
"""

from __future__ import annotations

import fcntl
import mmap
import os

from messages.codec import MAX_FRAME_BYTES

BEAT = 0.1  # seconds between heartbeats of an idle actor
HEADER_SIZE = 64
SIZE = HEADER_SIZE + MAX_FRAME_BYTES

# Word indexes in the header (8 bytes each).
_BEAT, _FLIGHT, _HANDLED, _MALFORMED, _DEAD, _EXPIRED, _PID = range(7)
_LEN_BITS, _INDEX_BITS = 20, 20
_LEN_MASK, _INDEX_MASK = (1 << _LEN_BITS) - 1, (1 << _INDEX_BITS) - 1


_DEQUEUED = 1 << 48  # the held datagram has left the kernel queue


def flight_word(length: int, index: int, attempts: int, dequeued: bool = True) -> int:
    return (length | index << _LEN_BITS | min(attempts, 0xFF) << (_LEN_BITS + _INDEX_BITS)
            | (_DEQUEUED if dequeued else 0))


def unpack_flight(word: int) -> tuple[int, int, int]:
    """(length, index, attempts) of an in-flight record."""
    return (word & _LEN_MASK, word >> _LEN_BITS & _INDEX_MASK,
            word >> (_LEN_BITS + _INDEX_BITS) & 0xFF)


class ControlBlock:
    def __init__(self, file: str, *, create: bool = False) -> None:
        self.file = file
        if create:  # a new file, never one a link points to
            try:
                os.unlink(file)
            except FileNotFoundError:
                pass
        flags = os.O_RDWR | os.O_NOFOLLOW | (os.O_CREAT | os.O_EXCL if create else 0)
        self.fd = os.open(file, flags, 0o600)
        if create:
            os.ftruncate(self.fd, SIZE)
        self.map = mmap.mmap(self.fd, SIZE)
        self.words = memoryview(self.map)[:HEADER_SIZE].cast("Q")
        self.beats = memoryview(self.map)[:8].cast("d")

    def close(self) -> None:
        self.words.release()
        self.beats.release()
        self.map.close()
        os.close(self.fd)

    # -- one incarnation at a time --------------------------------------------------------------
    def claim(self) -> None:
        """Block until no other process holds this actor's lock, then hold it until exit.

        The kernel drops the lock when its holder dies, however it dies; so an incarnation
        never reads a mailbox that a predecessor (a stuck process not yet reaped) still reads.
        """
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.words[_PID] = os.getpid()

    def claimed(self) -> bool:
        """Whether a live process holds the lock (for tests and the tree snapshot)."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        return False

    # -- heartbeat ------------------------------------------------------------------------------
    def beat(self, now: float) -> None:
        self.beats[0] = now

    @property
    def last_beat(self) -> float:
        return self.beats[0]

    # -- the batch in flight --------------------------------------------------------------------
    def hold(self, batch: bytes) -> None:
        """Record a datagram about to be handled, from its first message. The bytes go first
        and the record last, so a death in between leaves the old record (nothing held)."""
        self.map[HEADER_SIZE:HEADER_SIZE + len(batch)] = batch
        self.words[_FLIGHT] = flight_word(len(batch), 0, 0, dequeued=False)

    def dequeued(self) -> None:
        """The held datagram has left the kernel queue."""
        self.words[_FLIGHT] |= _DEQUEUED

    def still_queued(self) -> bool:
        """Whether the held datagram may still be at the head of the kernel queue."""
        word = self.words[_FLIGHT]
        return bool(word & _LEN_MASK) and not word & _DEQUEUED

    def at(self, length: int, index: int, attempts: int = 0) -> None:
        """The message at ``index`` of the held batch (of ``length`` bytes) is being handled
        now, after ``attempts`` earlier incarnations died handling it."""
        self.words[_FLIGHT] = flight_word(length, index, attempts)

    def release(self) -> None:
        self.words[_FLIGHT] = 0

    def held(self) -> tuple[bytes, int, int] | None:
        """(batch, index, attempts) left by an incarnation that died mid-batch, or None."""
        length, index, attempts = unpack_flight(self.words[_FLIGHT])
        if not length:
            return None
        return bytes(self.map[HEADER_SIZE:HEADER_SIZE + length]), index, attempts

    def attempts_in_hand(self) -> int:
        """How many incarnations had already died on the message in hand (0: a first try)."""
        length, _, attempts = unpack_flight(self.words[_FLIGHT])
        return attempts if length else 0

    # -- counters -------------------------------------------------------------------------------
    def count(self, handled: int = 0, malformed: int = 0, dead: int = 0, expired: int = 0) -> None:
        w = self.words
        if handled:
            w[_HANDLED] += handled
        if malformed:
            w[_MALFORMED] += malformed
        if dead:
            w[_DEAD] += dead
        if expired:
            w[_EXPIRED] += expired

    def counters(self) -> dict[str, int]:
        w = self.words
        return {"handled": w[_HANDLED], "malformed": w[_MALFORMED], "dead_letters": w[_DEAD],
                "expired_asks": w[_EXPIRED]}
