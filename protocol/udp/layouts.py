"""The worker's own frames: their types, their fields and the one table that lays them out.

Frame layout: ``magic:u8 version:u8 type:u8`` then the fields of its row in ``FRAME_LAYOUTS``,
big-endian, in row order: a token is 16 raw bytes, a worker id ``u8 length + ASCII``, chat text
``u16 length + UTF-8``, a benchmark payload the rest of the datagram. Benchmark frames begin
``session_id:u32 seq:u32``; BENCH_END puts ``END_MARKER`` (0xFFFFFFFF, the original system's
end-of-benchmark marker) in the seq slot, so no data chunk may use that seq.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum, IntEnum

FRAME_MAGIC = 0x0B
FRAME_VERSION = 1
END_MARKER = 0xFFFFFFFF
MAX_FRAME_SIZE = 1400  # under a 1500-byte MTU with IPv6 and UDP headers to spare
TOKEN_SIZE = 16  # 128 random bits handed out by the rendezvous service: not guessable
MAX_CHAT_TEXT_BYTES = 1200  # keeps a CHAT frame under MAX_FRAME_SIZE
MAX_BENCH_PAYLOAD = MAX_FRAME_SIZE - 11  # after magic, version, type, session_id and seq
WORKER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class FrameType(IntEnum):
    PUNCH = 1
    PUNCH_ACK = 2
    KEEPALIVE = 3
    PING = 4
    PONG = 5
    CHAT = 6
    BENCH_DATA = 7
    BENCH_END = 8
    CHAT_ACK = 9


class Wire(Enum):
    """How one field is laid out; the value names what a valid field holds."""

    TOKEN = "a 16-byte token"
    U32 = "an integer in 0..2**32-1"
    SEQ = "a chunk seq below END_MARKER"
    U64 = "an integer in 0..2**64-1"
    END = "END_MARKER"
    WORKER_ID = "a worker id of 1-64 characters [A-Za-z0-9_-]"
    TEXT = f"text of at most {MAX_CHAT_TEXT_BYTES} UTF-8 bytes"
    PAYLOAD = "bytes"


@dataclass(frozen=True)
class Punch:
    token: bytes
    sender_id: str
    seq: int


@dataclass(frozen=True)
class PunchAck:
    token: bytes
    seq: int


@dataclass(frozen=True)
class Keepalive:
    token: bytes


@dataclass(frozen=True)
class Ping:
    ping_id: int
    token: bytes


@dataclass(frozen=True)
class Pong:
    ping_id: int
    token: bytes


@dataclass(frozen=True)
class Chat:
    token: bytes
    msg_id: int
    text: str


@dataclass(frozen=True)
class ChatAck:
    """The peer got our CHAT ``msg_id`` (one ack per chat; UDP chat is not retransmitted)."""

    token: bytes
    msg_id: int


@dataclass(frozen=True)
class BenchData:
    session_id: int
    seq: int
    payload: bytes


@dataclass(frozen=True)
class BenchEnd:
    session_id: int
    chunks: int
    total_bytes: int


Frame = Punch | PunchAck | Keepalive | Ping | Pong | Chat | BenchData | BenchEnd | ChatAck
Layout = tuple[tuple[str | None, Wire], ...]  # (dataclass field or None for a constant, wire)

FRAME_LAYOUTS: dict[FrameType, tuple[type[Frame], Layout]] = {
    FrameType.PUNCH: (Punch, (("token", Wire.TOKEN), ("seq", Wire.U32),
                              ("sender_id", Wire.WORKER_ID))),
    FrameType.PUNCH_ACK: (PunchAck, (("token", Wire.TOKEN), ("seq", Wire.U32))),
    FrameType.KEEPALIVE: (Keepalive, (("token", Wire.TOKEN),)),
    FrameType.PING: (Ping, (("token", Wire.TOKEN), ("ping_id", Wire.U32))),
    FrameType.PONG: (Pong, (("token", Wire.TOKEN), ("ping_id", Wire.U32))),
    FrameType.CHAT: (Chat, (("token", Wire.TOKEN), ("msg_id", Wire.U32), ("text", Wire.TEXT))),
    FrameType.BENCH_DATA: (BenchData, (("session_id", Wire.U32), ("seq", Wire.SEQ),
                                       ("payload", Wire.PAYLOAD))),
    FrameType.BENCH_END: (BenchEnd, (("session_id", Wire.U32), (None, Wire.END),
                                     ("chunks", Wire.U32), ("total_bytes", Wire.U64))),
    FrameType.CHAT_ACK: (ChatAck, (("token", Wire.TOKEN), ("msg_id", Wire.U32))),
}
