"""The benchmark payload on one QUIC stream, checked end to end.

The sender writes ``STREAM_MAGIC size:u64 sha256:32`` (44 bytes) then exactly ``size`` bytes and
ends the stream. QUIC already retransmits and orders, so the receiver only counts and hashes;
``StreamCheck`` is fed the stream's data as it arrives, in any slicing, and holds nothing but
the header's 44 bytes and a running digest. The header needs the size and digest up front, so
this mode sends generated payloads and files (a download would be hashed on disk first).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from messages.errors import DecodeError, FrameTooLarge

STREAM_MAGIC = b"HPB1"
_HEADER = struct.Struct("!4sQ32s")
HEADER_SIZE = _HEADER.size
MAX_STREAM_SIZE = 2**40  # 1 TiB: anything larger is not a benchmark


def stream_header(size: int, sha256: bytes) -> bytes:
    return _HEADER.pack(STREAM_MAGIC, size, sha256)


@dataclass(frozen=True)
class StreamVerdict:
    bytes_received: int
    announced_size: int
    sha256: bytes  # what arrived
    announced_sha256: bytes

    @property
    def complete(self) -> bool:
        return self.bytes_received == self.announced_size

    @property
    def sha256_match(self) -> bool:
        return self.complete and self.sha256 == self.announced_sha256


class StreamCheck:
    """Counts and hashes one benchmark stream; ``feed`` raises only DecodeError."""

    def __init__(self) -> None:
        self._header = b""
        self.size: int | None = None
        self.announced_sha256 = b""
        self.bytes_received = 0
        self._sha = hashlib.sha256()

    def feed(self, data: bytes) -> None:
        if self.size is None:
            data = self._take_header(data)
        if self.size is None or not data:
            return
        if self.bytes_received + len(data) > self.size:
            raise FrameTooLarge(f"benchmark stream longer than its announced {self.size} bytes")
        self.bytes_received += len(data)
        self._sha.update(data)

    def verdict(self) -> StreamVerdict:
        """At the end of the stream; a stream that ended inside its header raises."""
        if self.size is None:
            raise DecodeError(f"benchmark stream ended after {len(self._header)} header bytes")
        return StreamVerdict(self.bytes_received, self.size, self._sha.digest(),
                             self.announced_sha256)

    def _take_header(self, data: bytes) -> bytes:
        missing = HEADER_SIZE - len(self._header)
        self._header += data[:missing]
        if len(self._header) < HEADER_SIZE:
            return b""
        magic, size, sha256 = _HEADER.unpack(self._header)
        if magic != STREAM_MAGIC:
            raise DecodeError(f"not a benchmark stream: magic {magic!r}")
        if size > MAX_STREAM_SIZE:
            raise FrameTooLarge(f"benchmark stream of {size} bytes > {MAX_STREAM_SIZE}")
        self.size, self.announced_sha256 = size, sha256
        return data[missing:]


# The receiver's answer on the same (bidirectional) stream, then FIN: what arrived, how long it
# took on the receiver's clock, and the digest it computed.
_REPLY = struct.Struct("!4sQQ32s")
REPLY_SIZE = _REPLY.size


@dataclass(frozen=True)
class StreamReply:
    bytes_received: int
    duration_us: int
    sha256: bytes


def stream_reply(reply: StreamReply) -> bytes:
    return _REPLY.pack(STREAM_MAGIC, reply.bytes_received, reply.duration_us, reply.sha256)


def parse_reply(data: bytes) -> StreamReply:
    """The receiver's answer; raises only DecodeError."""
    if len(data) != REPLY_SIZE:
        raise DecodeError(f"benchmark stream reply of {len(data)} bytes, expected {REPLY_SIZE}")
    magic, size, duration_us, sha256 = _REPLY.unpack(data)
    if magic != STREAM_MAGIC:
        raise DecodeError(f"not a benchmark stream reply: magic {magic!r}")
    return StreamReply(size, duration_us, sha256)
