"""Encoding and decoding of the worker's own frames, field by field along ``FRAME_LAYOUTS``.

``encode_frame`` treats an invalid frame as our own misuse (``UsageError``); ``decode_frame``
takes hostile bytes and fails only with ``DecodeError`` (and its subclasses).
"""

from __future__ import annotations

import struct
from typing import Any

from messages.errors import DecodeError, FrameTooLarge, UnknownMessage, UsageError
from protocol.udp.layouts import (
    FRAME_LAYOUTS,
    FRAME_MAGIC,
    FRAME_VERSION,
    MAX_CHAT_TEXT_BYTES,
    MAX_FRAME_SIZE,
    TOKEN_SIZE,
    WORKER_ID,
    Frame,
    FrameType,
    Wire,
)

_TYPE_OF_CLASS = {cls: frame_type for frame_type, (cls, _) in FRAME_LAYOUTS.items()}
_STRUCTS = {Wire.TOKEN: struct.Struct("!16s"), Wire.U32: struct.Struct("!I")}
_INT_MAXIMUM = {Wire.U32: 0xFFFFFFFF}


def _is_valid(wire: Wire, value: Any) -> bool:
    if wire in _INT_MAXIMUM:
        return type(value) is int and 0 <= value <= _INT_MAXIMUM[wire]
    if wire is Wire.TOKEN:
        return type(value) is bytes and len(value) == TOKEN_SIZE
    if wire is Wire.WORKER_ID:
        return type(value) is str and WORKER_ID.fullmatch(value) is not None
    return type(value) is str and _utf8_size(value) <= MAX_CHAT_TEXT_BYTES  # Wire.TEXT


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
    encoded = value.encode("utf-8")  # Wire.TEXT
    return struct.pack("!H", len(encoded)) + encoded


def _take(data: bytes, offset: int, size: int) -> bytes:
    if offset + size > len(data):
        raise DecodeError(f"frame truncated: needs {offset + size} bytes, has {len(data)}")
    return data[offset:offset + size]


def _unpack_field(wire: Wire, data: bytes, offset: int) -> tuple[Any, int]:
    if wire in _STRUCTS:
        size = _STRUCTS[wire].size
        return _STRUCTS[wire].unpack(_take(data, offset, size))[0], offset + size
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
        value = getattr(frame, name)
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
        values[name] = value
    if offset != len(data):
        raise DecodeError(f"{len(data) - offset} trailing bytes after {frame_class.__name__}")
    return frame_class(**values)
