"""The benchmark's datagrams: their types, their fields and the one table that lays them out.

Every frame begins ``magic:u8 version:u8 type:u8 session_id:u32``, then the fields of its row in
``LAYOUTS``, big-endian, in row order. ``BENCH_MAGIC`` (0x0E) sits in 4..15, the range RFC 7983
section 7 / RFC 9443 section 3 leave to neither STUN (0..3) nor QUIC (64..255), beside the
worker's own frames (0x0B, ``protocol.udp.layouts.FRAME_MAGIC``) but not on them, so the UDP
shell hands a benchmark datagram to the benchmark by its first byte without decoding it. 0x0E is
no whitespace for JSON nor for ``str.strip`` (0x0B and 0x0C are), so no datagram of the original
system can begin with it.

DATA and END put their sequence number at the same offset (7); END carries ``END_MARKER``
(0xFFFFFFFF, the original system's end-of-benchmark marker) there, so no chunk may use it.
A datagram is at most ``MAX_DATAGRAM`` (1200) bytes: QUIC's minimum path MTU (RFC 9000
section 14), which the punched path already carries.

``encode`` treats an invalid frame as our own misuse (``UsageError``); ``decode`` takes hostile
bytes and fails only with ``DecodeError`` (and its subclasses).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, fields

from messages.errors import DecodeError, FrameTooLarge, UnknownMessage, UsageError

BENCH_MAGIC = 0x0E
END_MARKER = 0xFFFFFFFF  # the original system's end-of-benchmark sequence number
BENCH_VERSION = 1
MAX_DATAGRAM = 1200
UNKNOWN_SIZE = 2**64 - 1  # START.total_size of a stream whose length is not known in advance
_PREFIX = struct.Struct("!BBBI")
DATA_HEADER = _PREFIX.size + 4
MAX_CHUNK = MAX_DATAGRAM - DATA_HEADER  # 1189 payload bytes per DATA
SHA256_SIZE = 32


class BenchType(enum.IntEnum):
    START = 1
    DATA = 2
    END = 3
    CANCEL = 4
    REPORT = 5
    RESULT = 6


class Status(enum.IntEnum):
    """How a session ended, as the receiver saw it (RESULT.status)."""

    COMPLETE = 1  # every chunk arrived and the SHA-256 matches the sender's
    INCOMPLETE = 2  # chunks were lost (so the SHA-256 could not be checked)
    CORRUPT = 3  # every chunk arrived but the size or the SHA-256 differs
    CANCELLED = 4  # the sender cancelled
    REJECTED = 5  # the receiver already runs its maximum of sessions
    ABANDONED = 6  # the sender went silent (receiver-side only; never sent)
    UNVERIFIED = 7  # every chunk arrived, reordered deeper than the hash buffer could hold


@dataclass(frozen=True)
class Start:
    session_id: int
    total_size: int  # UNKNOWN_SIZE for a streamed download
    chunk_size: int


@dataclass(frozen=True)
class Data:
    session_id: int
    seq: int
    payload: bytes


@dataclass(frozen=True)
class End:
    session_id: int
    chunks: int
    total_bytes: int
    sha256: bytes


@dataclass(frozen=True)
class Cancel:
    session_id: int


@dataclass(frozen=True)
class Report:
    """The receiver's periodic view; ``expected`` is the highest seq seen + 1."""

    session_id: int
    report_seq: int
    chunks: int
    expected: int
    bytes_received: int
    elapsed_us: int


@dataclass(frozen=True)
class Result:
    session_id: int
    status: Status
    chunks: int
    lost: int
    duplicates: int
    reordered: int
    bytes_received: int
    duration_us: int
    sha256: bytes  # the receiver's digest; all zero when it could not hash the whole payload

    @property
    def goodput(self) -> float:
        """Bytes/s the receiver counted, from its first datagram to the end marker."""
        return self.bytes_received * 1e6 / self.duration_us if self.duration_us else 0.0


BenchFrame = Start | Data | End | Cancel | Report | Result

# type -> (class, struct of its fields after the prefix)
LAYOUTS: dict[BenchType, tuple[type[BenchFrame], struct.Struct]] = {
    BenchType.START: (Start, struct.Struct("!QH")),
    BenchType.DATA: (Data, struct.Struct("!I")),  # then the payload: the rest of the datagram
    BenchType.END: (End, struct.Struct("!IIQ32s")),  # END_MARKER first, in DATA's seq slot
    BenchType.CANCEL: (Cancel, struct.Struct("!")),
    BenchType.REPORT: (Report, struct.Struct("!IIIQQ")),
    BenchType.RESULT: (Result, struct.Struct("!BIIIIQQ32s")),
}
_TYPE_OF_CLASS = {cls: bench_type for bench_type, (cls, _) in LAYOUTS.items()}
_FIELD_NAMES = {cls: tuple(f.name for f in fields(cls)[1:]) for cls in _TYPE_OF_CLASS}
_DATA_HEADER = struct.Struct("!BBBII")


def encode_data(session_id: int, seq: int, payload: bytes) -> bytes:
    """A DATA datagram: the sender's hot path, without building a ``Data`` first."""
    if not (0 <= seq < END_MARKER and 0 < len(payload) <= MAX_CHUNK):
        raise UsageError(f"DATA seq {seq} with {len(payload)} payload bytes")
    try:
        header = _DATA_HEADER.pack(BENCH_MAGIC, BENCH_VERSION, BenchType.DATA, session_id, seq)
    except struct.error as exc:
        raise UsageError(f"DATA: {exc}") from None
    return header + payload


def toward_sender(datagram: bytes) -> bool:
    """Whether a benchmark datagram goes to the sender (REPORT, RESULT), else the receiver."""
    return len(datagram) > 2 and datagram[2] in (BenchType.REPORT, BenchType.RESULT)


def encode(frame: BenchFrame) -> bytes:
    """The datagram of one frame; an invalid frame is our own misuse (UsageError)."""
    bench_type = _TYPE_OF_CLASS.get(type(frame))
    if bench_type is None:
        raise UsageError(f"not a benchmark frame: {frame!r}")
    if isinstance(frame, Data):
        return encode_data(frame.session_id, frame.seq, bytes(frame.payload))
    _check(frame)
    rest = [getattr(frame, name) for name in _FIELD_NAMES[type(frame)]]
    if isinstance(frame, End):
        rest.insert(0, END_MARKER)
    try:
        return (_PREFIX.pack(BENCH_MAGIC, BENCH_VERSION, bench_type, frame.session_id)
                + LAYOUTS[bench_type][1].pack(*rest))
    except struct.error as exc:
        raise UsageError(f"{bench_type.name}: {exc}") from None


def decode(data: bytes) -> BenchFrame:
    """One frame from hostile bytes; raises only DecodeError (and its subclasses)."""
    if len(data) > MAX_DATAGRAM:
        raise FrameTooLarge(f"benchmark datagram of {len(data)} bytes > {MAX_DATAGRAM}")
    if len(data) < _PREFIX.size:
        raise DecodeError(f"benchmark datagram truncated: {len(data)} bytes")
    magic, version, tag, session_id = _PREFIX.unpack_from(data)
    if magic != BENCH_MAGIC or version != BENCH_VERSION:
        raise DecodeError(f"not a benchmark frame of version {BENCH_VERSION}: "
                          f"{magic:#04x} {version}")
    if tag not in BenchType._value2member_map_:
        raise UnknownMessage(f"unknown benchmark frame type {tag}")
    cls, layout = LAYOUTS[BenchType(tag)]
    fixed_end = _PREFIX.size + layout.size
    if len(data) < fixed_end or (cls is not Data and len(data) != fixed_end):
        raise DecodeError(f"{cls.__name__} of {len(data)} bytes, expected "
                          f"{'at least ' if cls is Data else ''}{fixed_end}")
    fields = layout.unpack_from(data, _PREFIX.size)
    frame = _build(cls, session_id, fields, data[fixed_end:])
    _check(frame, DecodeError)
    return frame


def _build(cls: type[BenchFrame], session_id: int, fields: tuple, tail: bytes) -> BenchFrame:
    if cls is Data:
        return Data(session_id, fields[0], tail)
    if cls is End:
        if fields[0] != END_MARKER:
            raise DecodeError(f"END without the end marker: seq {fields[0]:#x}")
        return End(session_id, *fields[1:])
    if cls is Result:
        if fields[0] not in Status._value2member_map_:
            raise DecodeError(f"RESULT with unknown status {fields[0]}")
        return Result(session_id, Status(fields[0]), *fields[1:])
    return cls(session_id, *fields)


def _check(frame: BenchFrame, error: type[Exception] = UsageError) -> None:
    """The rules a struct format cannot say."""
    if isinstance(frame, Data) and (frame.seq >= END_MARKER or not frame.payload):
        raise error(f"DATA needs a seq below {END_MARKER:#x} and a payload")
    if isinstance(frame, Start) and not 0 < frame.chunk_size <= MAX_CHUNK:
        raise error(f"START chunk_size {frame.chunk_size} outside 1..{MAX_CHUNK}")
    if isinstance(frame, End) and frame.chunks >= END_MARKER:
        raise error(f"END of {frame.chunks} chunks: seqs would reach the end marker")
    if isinstance(frame, End | Result) and (type(frame.sha256) is not bytes
                                            or len(frame.sha256) != SHA256_SIZE):
        raise error(f"{type(frame).__name__} needs a {SHA256_SIZE}-byte SHA-256")
