"""What one receiving session counts, in bounded memory.

Sequence numbers are tracked in a reorder window of ``REORDER_WINDOW`` seqs above ``base`` (one
byte each, 4 KiB): a seq seen twice in the window is a duplicate; a seq below the highest seen
is reordered. A seq beyond the window slides it forward and every seq it passes unseen is lost
for good: a chunk arriving more than 4096 chunks (4.9 MB) late is counted ``stale`` (late or a
duplicate, no longer told apart) and its bytes are not counted.

SHA-256 needs the bytes in order, so chunks ahead of the next one to hash are held, up to
``HASH_BUFFER`` bytes (2 MiB). A chunk lost for good, or a gap still open when the held bytes
pass that bound, ends the hashing: the run still counts everything, but its digest is unknown.
A session therefore holds at most ~2 MiB + 4 KiB whatever its peer sends.
"""

from __future__ import annotations

import hashlib

REORDER_WINDOW = 4096
HASH_BUFFER = 2 * 1024 * 1024


class ReceiveWindow:
    def __init__(self) -> None:
        self.chunks = self.bytes_received = self.lost = self.duplicates = self.reordered = 0
        self.stale = 0
        self.base, self.highest = 0, -1
        self._seen = bytearray(REORDER_WINDOW)
        self._sha = hashlib.sha256()
        self._hash_next, self._held_bytes, self.hash_broken = 0, 0, False
        self._held: dict[int, bytes] = {}

    @property
    def expected(self) -> int:
        return self.highest + 1

    def accept(self, seq: int, payload: bytes) -> None:
        if seq < self.base:
            self.stale += 1
            return
        if seq >= self.base + REORDER_WINDOW:
            self._slide(seq - REORDER_WINDOW + 1)
        slot = seq % REORDER_WINDOW
        if self._seen[slot]:
            self.duplicates += 1
            return
        self._seen[slot] = 1
        self.chunks += 1
        self.bytes_received += len(payload)
        if seq < self.highest:
            self.reordered += 1
        self.highest = max(self.highest, seq)
        self._hash(seq, payload)

    def finish(self, chunks: int) -> None:
        """The sender sent ``chunks``: whatever is still unseen below that is lost."""
        if chunks > self.base:
            self._slide(chunks)

    def digest(self, chunks: int) -> bytes | None:
        """The payload's SHA-256 if all ``chunks`` were hashed in order, else None."""
        complete = not self.hash_broken and self._hash_next == chunks
        return self._sha.digest() if complete else None

    def _slide(self, new_base: int) -> None:
        """Settles every seq below ``new_base``; never loops more than the window."""
        end = min(new_base, self.base + REORDER_WINDOW)
        missing = new_base - end  # beyond the window: never seen
        for seq in range(self.base, end):
            slot = seq % REORDER_WINDOW
            missing += not self._seen[slot]
            self._seen[slot] = 0
        if missing:
            self.lost += missing
            self._break_hash()  # every seq below the hash's next one arrived: the gap is ahead
        self.base = new_base

    def _hash(self, seq: int, payload: bytes) -> None:
        if self.hash_broken:
            return
        if seq != self._hash_next:
            self._held[seq] = payload
            self._held_bytes += len(payload)
            if self._held_bytes > HASH_BUFFER:
                self._break_hash()
            return
        self._sha.update(payload)
        self._hash_next += 1
        while self._hash_next in self._held:
            held = self._held.pop(self._hash_next)
            self._held_bytes -= len(held)
            self._sha.update(held)
            self._hash_next += 1

    def _break_hash(self) -> None:
        self.hash_broken = True
        self._held.clear()
        self._held_bytes = 0
