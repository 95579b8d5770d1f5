"""Demultiplexing of the worker's one UDP socket, our own frame codec and the original dialect.

One socket carries STUN, QUIC and our frames; the first byte tells them apart as in
RFC 7983 section 7 / RFC 9443 section 3:

    0..3     STUN (RFC 8489 section 6: the two top bits are zero), checked by stun.is_stun
    4..15    unassigned in both RFCs (RFC 9443 routers drop it) -> our frames: FRAME_MAGIC 0x0B,
             a control byte that is not JSON whitespace (unlike 0x09, 0x0A, 0x0D), so no text
             or JSON datagram of the original system can start with it
    64..127  QUIC short header (fixed bit set). '{' (0x7B) and 'P' (0x50) land here too, so the
             original system's JSON and text datagrams count as legacy only when they parse
    128..255 QUIC long header (128..191 only with a greased fixed bit, RFC 9287; this socket
             carries no RTP, to which RFC 7983 gives that range)

Frame layout: ``magic:u8 version:u8 type:u8`` then the fields of its row in ``FRAME_LAYOUTS``,
big-endian, in row order: a token is 16 raw bytes, a worker id ``u8 length + ASCII``, chat text
``u16 length + UTF-8``, a benchmark payload the rest of the datagram. Benchmark frames begin
``session_id:u32 seq:u32``; BENCH_END puts ``END_MARKER`` (0xFFFFFFFF, the original system's
end-of-benchmark marker) in the seq slot, so no data chunk may use that seq.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any, TypeGuard

from messages.errors import DecodeError, FrameTooLarge, UnknownMessage, UsageError
from protocol.stun import is_stun

FRAME_MAGIC = 0x0B
FRAME_VERSION = 1
END_MARKER = 0xFFFFFFFF
MAX_FRAME_SIZE = 1400  # under a 1500-byte MTU with IPv6 and UDP headers to spare
TOKEN_SIZE = 16  # 128 random bits handed out by the rendezvous service: not guessable
MAX_CHAT_TEXT_BYTES = 1200  # keeps a CHAT frame under MAX_FRAME_SIZE
MAX_BENCH_PAYLOAD = MAX_FRAME_SIZE - 11  # after magic, version, type, session_id and seq
MAX_LEGACY_SIZE = 8192  # the original sent one JSON chat per datagram; bounds json.loads work
WORKER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
LEGACY_PUNCH = re.compile(rb"P2P_HOLE_PUNCH_PING_FROM_([A-Za-z0-9_-]{1,64})_NUM_([0-9]{1,9})")


class DatagramKind(Enum):
    STUN = "stun"
    WORKER = "worker"
    QUIC = "quic"
    LEGACY_JSON = "legacy_json"
    LEGACY_TEXT = "legacy_text"
    UNKNOWN = "unknown"


def classify(datagram: bytes) -> DatagramKind:
    """Which part of the worker a received datagram belongs to; never raises."""
    first = datagram[0] if datagram else -1
    if 0 <= first <= 3:
        return DatagramKind.STUN if is_stun(datagram) else DatagramKind.UNKNOWN
    if first == FRAME_MAGIC:
        return DatagramKind.WORKER
    if first < 64:
        return DatagramKind.UNKNOWN
    if first == ord("{") and _legacy_json_object(datagram) is not None:
        return DatagramKind.LEGACY_JSON
    if first == ord("P") and LEGACY_PUNCH.fullmatch(datagram):
        return DatagramKind.LEGACY_TEXT
    return DatagramKind.QUIC


class FrameType(IntEnum):
    PUNCH = 1
    PUNCH_ACK = 2
    KEEPALIVE = 3
    PING = 4
    PONG = 5
    CHAT = 6
    BENCH_DATA = 7
    BENCH_END = 8


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
class BenchData:
    session_id: int
    seq: int
    payload: bytes


@dataclass(frozen=True)
class BenchEnd:
    session_id: int
    chunks: int
    total_bytes: int


Frame = Punch | PunchAck | Keepalive | Ping | Pong | Chat | BenchData | BenchEnd
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
}
_TYPE_OF_CLASS = {cls: frame_type for frame_type, (cls, _) in FRAME_LAYOUTS.items()}
_STRUCTS = {Wire.TOKEN: struct.Struct("!16s"), Wire.U32: struct.Struct("!I"),
            Wire.SEQ: struct.Struct("!I"), Wire.END: struct.Struct("!I"),
            Wire.U64: struct.Struct("!Q")}
_INT_MAXIMUM = {Wire.U32: 0xFFFFFFFF, Wire.SEQ: END_MARKER - 1, Wire.U64: 2**64 - 1}


def _is_valid(wire: Wire, value: Any) -> bool:
    if wire in _INT_MAXIMUM:
        return type(value) is int and 0 <= value <= _INT_MAXIMUM[wire]
    if wire is Wire.END:
        return value == END_MARKER
    if wire is Wire.TOKEN:
        return type(value) is bytes and len(value) == TOKEN_SIZE
    if wire is Wire.WORKER_ID:
        return type(value) is str and WORKER_ID.fullmatch(value) is not None
    if wire is Wire.TEXT:
        return type(value) is str and _utf8_size(value) <= MAX_CHAT_TEXT_BYTES
    return type(value) is bytes


def _utf8_size(text: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate has no UTF-8 form
        return MAX_CHAT_TEXT_BYTES + 1


def _pack_field(wire: Wire, value: Any) -> bytes:
    if wire in _STRUCTS:
        return _STRUCTS[wire].pack(value)
    if wire is Wire.WORKER_ID:
        return bytes((len(value),)) + value.encode("ascii")
    if wire is Wire.TEXT:
        encoded = value.encode("utf-8")
        return struct.pack("!H", len(encoded)) + encoded
    return bytes(value)


def _take(data: bytes, offset: int, size: int) -> bytes:
    if offset + size > len(data):
        raise DecodeError(f"frame truncated: needs {offset + size} bytes, has {len(data)}")
    return data[offset:offset + size]


def _unpack_field(wire: Wire, data: bytes, offset: int) -> tuple[Any, int]:
    if wire in _STRUCTS:
        size = _STRUCTS[wire].size
        return _STRUCTS[wire].unpack(_take(data, offset, size))[0], offset + size
    if wire is Wire.PAYLOAD:
        return data[offset:], len(data)
    prefix = 1 if wire is Wire.WORKER_ID else 2
    (length,) = struct.unpack("!B" if prefix == 1 else "!H", _take(data, offset, prefix))
    raw = _take(data, offset + prefix, length)
    try:
        return raw.decode("ascii" if prefix == 1 else "utf-8"), offset + prefix + length
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{wire.value} expected: {exc.reason}") from None


def encode_frame(frame: Frame) -> bytes:
    """The datagram for one of our frames; an invalid frame is our own misuse (UsageError)."""
    frame_type = _TYPE_OF_CLASS.get(type(frame))
    if frame_type is None:
        raise UsageError(f"not a worker frame: {frame!r}")
    parts = [bytes((FRAME_MAGIC, FRAME_VERSION, frame_type))]
    for name, wire in FRAME_LAYOUTS[frame_type][1]:
        value = END_MARKER if name is None else getattr(frame, name)
        if not _is_valid(wire, value):
            raise UsageError(f"{frame_type.name}.{name}: {wire.value} expected, got {value!r}")
        parts.append(_pack_field(wire, value))
    datagram = b"".join(parts)
    if len(datagram) > MAX_FRAME_SIZE:
        raise UsageError(f"{frame_type.name} of {len(datagram)} bytes > {MAX_FRAME_SIZE}")
    return datagram


def _frame_type(data: bytes) -> FrameType:
    if len(data) > MAX_FRAME_SIZE:
        raise FrameTooLarge(f"frame of {len(data)} bytes > {MAX_FRAME_SIZE}")
    magic, version, tag = _take(data, 0, 3)
    if magic != FRAME_MAGIC:
        raise DecodeError(f"not a worker frame: first byte {magic:#04x}")
    if version != FRAME_VERSION:
        raise DecodeError(f"frame version {version}, this worker speaks {FRAME_VERSION}")
    try:
        return FrameType(tag)
    except ValueError:
        raise UnknownMessage(f"unknown frame type {tag}") from None


def decode_frame(data: bytes) -> Frame:
    """One of our frames from hostile bytes; raises only DecodeError (and its subclasses)."""
    frame_class, layout = FRAME_LAYOUTS[_frame_type(data)]
    values, offset = {}, 3
    for name, wire in layout:
        value, offset = _unpack_field(wire, data, offset)
        if not _is_valid(wire, value):
            raise DecodeError(f"{frame_class.__name__}.{name}: {wire.value} expected")
        if name is not None:
            values[name] = value
    if offset != len(data):
        raise DecodeError(f"{len(data) - offset} trailing bytes after {frame_class.__name__}")
    return frame_class(**values)


@dataclass(frozen=True)
class LegacyChat:
    from_worker_id: str
    content: str


@dataclass(frozen=True)
class LegacyPing:
    """``p2p_ping_request`` / ``p2p_ping_response``; the seeds fix only ``type``."""

    is_response: bool
    from_worker_id: str | None = None
    timestamp: float | None = None


@dataclass(frozen=True)
class LegacyPunch:
    from_worker_id: str
    number: int


LegacyDatagram = LegacyChat | LegacyPing | LegacyPunch
_LEGACY_PING_TYPES = {"p2p_ping_request": False, "p2p_ping_response": True}


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _legacy_json_object(data: bytes) -> dict[str, Any] | None:
    """The JSON object of an original-system datagram with a string "type", else None."""
    if len(data) > MAX_LEGACY_SIZE:
        return None
    try:
        message = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # RecursionError: hostile nesting depth
        return None
    if isinstance(message, dict) and isinstance(message.get("type"), str):
        return message
    return None


def _optional(message: dict[str, Any], key: str, valid: Callable[[Any], bool]) -> Any:
    value = message.get(key)
    if value is None or valid(value):
        return value
    raise DecodeError(f"legacy {message['type']}: {key} has the wrong type")


def _is_worker_id(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and WORKER_ID.fullmatch(value) is not None


def _is_timestamp(value: Any) -> bool:
    if type(value) is int:
        return abs(value) < 2**63  # JSON integers have no bound
    return type(value) is float and math.isfinite(value)  # JSON may say 1e999


def decode_legacy(data: bytes) -> LegacyDatagram:
    """A datagram of the original system; raises only DecodeError (and its subclasses)."""
    if len(data) > MAX_LEGACY_SIZE:
        raise FrameTooLarge(f"legacy datagram of {len(data)} bytes > {MAX_LEGACY_SIZE}")
    punch = LEGACY_PUNCH.fullmatch(data)
    if punch:
        return LegacyPunch(punch[1].decode("ascii"), int(punch[2]))
    message = _legacy_json_object(data)
    if message is None:
        raise DecodeError("not a datagram of the original system")
    if message["type"] == "chat_message":
        sender, content = message.get("from_worker_id"), message.get("content")
        if not _is_worker_id(sender):
            raise DecodeError("legacy chat_message: from_worker_id is not a worker id")
        if not isinstance(content, str):
            raise DecodeError("legacy chat_message: content is not a string")
        return LegacyChat(sender, content)
    if message["type"] in _LEGACY_PING_TYPES:
        return LegacyPing(_LEGACY_PING_TYPES[message["type"]],
                          _optional(message, "from_worker_id", _is_worker_id),
                          _optional(message, "timestamp", _is_timestamp))
    raise UnknownMessage(f"legacy datagram of unknown type {message['type'][:64]!r}")


def encode_legacy_chat(from_worker_id: str, content: str) -> bytes:
    """The original's UDP chat datagram, keys in its order (seed 003, send_p2p_message)."""
    message = {"type": "chat_message", "from_worker_id": from_worker_id, "content": content}
    return json.dumps(message).encode()


def encode_legacy_ping(ping: LegacyPing) -> bytes:
    message: dict[str, Any] = {"type": "p2p_ping_response" if ping.is_response
                               else "p2p_ping_request"}
    if ping.from_worker_id is not None:
        message["from_worker_id"] = ping.from_worker_id
    if ping.timestamp is not None:
        message["timestamp"] = ping.timestamp
    return json.dumps(message).encode()


def encode_legacy_punch(from_worker_id: str, number: int) -> bytes:
    return f"P2P_HOLE_PUNCH_PING_FROM_{from_worker_id}_NUM_{number}".encode()
