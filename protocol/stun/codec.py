"""STUN messages (RFC 8489, which obsoletes RFC 5389, and classic RFC 3489): header and codec.

A message is a 20-byte header and the attributes of ``protocol.stun.attributes``. A message
without the magic cookie is an RFC 3489 one: its transaction id is the whole 128 bits after the
length.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from messages.errors import DecodeError, FrameTooLarge, UsageError
from protocol.stun.attributes import row_for_name, row_for_type

MAGIC_COOKIE = b"\x21\x12\xa4\x42"
HEADER_LENGTH = 20
# pystun3 and most clients read into 2048-byte buffers; a Binding message is far smaller.
MAX_MESSAGE_SIZE = 2048
FINGERPRINT_XOR = 0x5354554E  # RFC 8489 §14.7: "STUN" xor-ed into the CRC-32
BINDING = 0x001


class StunClass(enum.IntEnum):
    REQUEST = 0
    INDICATION = 1
    SUCCESS = 2
    ERROR = 3


@dataclass(frozen=True)
class StunMessage:
    """One STUN message; ``attributes`` are ``(name, value)`` pairs in wire order."""

    method: int
    message_class: StunClass
    transaction_id: bytes
    attributes: tuple[tuple[str, Any], ...] = ()
    magic_cookie: bool = True

    def __post_init__(self) -> None:
        expected = 12 if self.magic_cookie else 16
        if len(self.transaction_id) != expected:
            raise UsageError(f"a transaction id here is {expected} bytes, not "
                             f"{len(self.transaction_id)}")

    def attribute(self, name: str) -> Any:
        """The first attribute called ``name`` (RFC 8489 §14: later duplicates are ignored)."""
        return next((value for key, value in self.attributes if key == name), None)


def _message_type(method: int, message_class: StunClass) -> int:
    # RFC 8489 §5: the two class bits sit at bits 4 and 8, between the method's bits.
    return ((method & 0xF80) << 2 | (method & 0x070) << 1 | (method & 0x00F)
            | (message_class & 2) << 7 | (message_class & 1) << 4)


def _split_message_type(message_type: int) -> tuple[int, StunClass]:
    method = (message_type >> 2) & 0xF80 | (message_type >> 1) & 0x070 | message_type & 0x00F
    return method, StunClass((message_type >> 7) & 2 | (message_type >> 4) & 1)


def _crc(data: bytes) -> int:
    return zlib.crc32(data) ^ FINGERPRINT_XOR


def is_stun(data: bytes) -> bool:
    """Whether a datagram on a shared socket is STUN: first byte 0..3 (RFC 7983 §7) and a
    length field that matches the datagram (RFC 8489 §6: one message per datagram)."""
    return (len(data) >= HEADER_LENGTH and data[0] < 4 and len(data) % 4 == 0
            and int.from_bytes(data[2:4], "big") == len(data) - HEADER_LENGTH)


def _check_header(data: bytes) -> None:
    if len(data) > MAX_MESSAGE_SIZE:
        raise FrameTooLarge(f"STUN message of {len(data)} bytes (limit {MAX_MESSAGE_SIZE})")
    if not is_stun(data):
        raise DecodeError(f"not a STUN message: {bytes(data[:4]).hex()}... ({len(data)} bytes)")


def parse_message(data: bytes) -> StunMessage:
    """Decode one datagram; raises only ``DecodeError`` (or a subclass) on bad input."""
    data = bytes(data)
    _check_header(data)
    method, message_class = _split_message_type(int.from_bytes(data[:2], "big"))
    classic = data[4:8] != MAGIC_COOKIE
    return StunMessage(method, message_class, data[4:20] if classic else data[8:20],
                       _parse_attributes(data), magic_cookie=not classic)


def _parse_attributes(data: bytes) -> tuple[tuple[str, Any], ...]:
    attributes: list[tuple[str, Any]] = []
    offset = HEADER_LENGTH
    # The header check made the length a multiple of 4, so each attribute header fits.
    while offset < len(data):
        kind, length = struct.unpack_from("!HH", data, offset)
        end = offset + 4 + length
        if end > len(data):
            raise DecodeError(f"STUN attribute 0x{kind:04X} runs past the message end")
        if attributes and attributes[-1][0] == "FINGERPRINT":
            raise DecodeError("STUN attribute after FINGERPRINT (RFC 8489 §14.7)")
        row = row_for_type(kind)
        value = row.unpack(data[offset + 4:end], data[4:20])
        if row.name == "FINGERPRINT" and value != _crc(data[:offset]):
            raise DecodeError("STUN FINGERPRINT does not match the message")
        attributes.append((row.name, value))
        offset = end + (-length % 4)  # RFC 8489 §14: values are padded to 4 bytes
    return tuple(attributes)


def serialize_message(message: StunMessage) -> bytes:
    """Encode ``message``; a FINGERPRINT attribute's value is computed here, whatever it was."""
    head = _message_type(message.method, message.message_class).to_bytes(2, "big")
    ident = (MAGIC_COOKIE if message.magic_cookie else b"") + message.transaction_id
    body = b""
    for name, value in message.attributes:
        row = row_for_name(name)
        if row.name == "FINGERPRINT":
            # RFC 8489 §14.7: the CRC covers the header with a length that counts the fingerprint
            value = _crc(head + (len(body) + 8).to_bytes(2, "big") + ident + body)
        packed = row.pack(value, ident)
        body += struct.pack("!HH", row.type, len(packed)) + packed + bytes(-len(packed) % 4)
    return head + len(body).to_bytes(2, "big") + ident + body
