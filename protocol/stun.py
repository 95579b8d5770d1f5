"""STUN messages (RFC 8489, which obsoletes RFC 5389, and classic RFC 3489), sans-I/O.

A table-driven codec: ``ATTRIBUTES`` holds one row per attribute, ``(type, name, pack,
unpack)``. An attribute nobody declared is kept as raw bytes under the name ``"0x8050"`` so
that a message round-trips unchanged. A message without the magic cookie is an RFC 3489 one:
its transaction id is the whole 128 bits after the length.

``binding_response`` is the whole logic of the embedded STUN responder.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from messages.errors import DecodeError, FrameTooLarge, UsageError

MAGIC_COOKIE = b"\x21\x12\xa4\x42"
HEADER_LENGTH = 20
# pystun3 and most clients read into 2048-byte buffers; a Binding message is far smaller.
MAX_MESSAGE_SIZE = 2048
# RFC 8489 §14.8 and §14.14: reason phrases and SOFTWARE are under 128 characters (763 bytes).
MAX_TEXT_BYTES = 763
FINGERPRINT_XOR = 0x5354554E  # RFC 8489 §14.7: "STUN" xor-ed into the CRC-32
BINDING = 0x001
CHANGE_IP = 0x04  # RFC 5780 §7.2 / RFC 3489 §11.2.4 CHANGE-REQUEST flags
CHANGE_PORT = 0x02
SOFTWARE_NAME = "p2p-rendezvous stun responder"

Address = tuple[str, int]


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


def _split_address(data: bytes) -> tuple[int, bytes]:
    if len(data) < 4 or data[1] not in (1, 2):
        raise DecodeError(f"bad STUN address family in {data[:2].hex()}")
    if len(data) != (8 if data[1] == 1 else 20):
        raise DecodeError(f"STUN address of family {data[1]} is {len(data)} bytes long")
    return int.from_bytes(data[2:4], "big"), data[4:]


def _unpack_address(data: bytes, key: bytes) -> Address:
    port, packed = _split_address(data)
    return str(ipaddress.ip_address(packed)), port


def _pack_address(value: Address, key: bytes) -> bytes:
    packed = ipaddress.ip_address(value[0]).packed
    return struct.pack("!BBH", 0, 1 if len(packed) == 4 else 2, value[1]) + packed


def _xor_address(data: bytes, key: bytes) -> bytes:
    # RFC 8489 §14.2: the port is xor-ed with the cookie's top half, the address with
    # cookie || transaction id. Lengths are checked first, so zip never truncates.
    _split_address(data)
    return data[:2] + bytes(a ^ b for a, b in zip(data[2:4], key)) + bytes(
        a ^ b for a, b in zip(data[4:], key))


def _unpack_xor_address(data: bytes, key: bytes) -> Address:
    return _unpack_address(_xor_address(data, key), key)


def _pack_xor_address(value: Address, key: bytes) -> bytes:
    return _xor_address(_pack_address(value, key), key)


def _unpack_uint32(data: bytes, key: bytes) -> int:
    if len(data) != 4:
        raise DecodeError(f"a 32-bit STUN attribute is {len(data)} bytes long")
    return int.from_bytes(data, "big")


def _pack_uint32(value: int, key: bytes) -> bytes:
    return value.to_bytes(4, "big")


def _unpack_text(data: bytes, key: bytes) -> str:
    if len(data) > MAX_TEXT_BYTES:
        raise FrameTooLarge(f"STUN text of {len(data)} bytes (limit {MAX_TEXT_BYTES})")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DecodeError(f"STUN text is not UTF-8: {error}") from None


def _pack_text(value: str, key: bytes) -> bytes:
    return value.encode("utf-8")


def _unpack_error_code(data: bytes, key: bytes) -> tuple[int, str]:
    # RFC 8489 §14.8: class 3..6 in the low 3 bits of byte 2, number 0..99 in byte 3.
    if len(data) < 4 or not 3 <= (data[2] & 7) <= 6 or data[3] > 99:
        raise DecodeError(f"bad STUN ERROR-CODE {data[:4].hex()}")
    return (data[2] & 7) * 100 + data[3], _unpack_text(data[4:], key)


def _pack_error_code(value: tuple[int, str], key: bytes) -> bytes:
    code, reason = value
    return struct.pack("!HBB", 0, code // 100, code % 100) + _pack_text(reason, key)


def _unpack_type_list(data: bytes, key: bytes) -> tuple[int, ...]:
    if len(data) % 2:
        raise DecodeError(f"UNKNOWN-ATTRIBUTES of odd length {len(data)}")
    return tuple(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))


def _pack_type_list(value: tuple[int, ...], key: bytes) -> bytes:
    return b"".join(kind.to_bytes(2, "big") for kind in value)


def _raw(data: bytes, key: bytes) -> bytes:
    return bytes(data)


class AttributeRow(NamedTuple):
    type: int
    name: str
    pack: Callable[[Any, bytes], bytes]
    unpack: Callable[[bytes, bytes], Any]


ATTRIBUTES = (
    AttributeRow(0x0001, "MAPPED-ADDRESS", _pack_address, _unpack_address),
    AttributeRow(0x0003, "CHANGE-REQUEST", _pack_uint32, _unpack_uint32),
    AttributeRow(0x0004, "SOURCE-ADDRESS", _pack_address, _unpack_address),  # RFC 3489
    AttributeRow(0x0005, "CHANGED-ADDRESS", _pack_address, _unpack_address),  # RFC 3489
    AttributeRow(0x0009, "ERROR-CODE", _pack_error_code, _unpack_error_code),
    AttributeRow(0x000A, "UNKNOWN-ATTRIBUTES", _pack_type_list, _unpack_type_list),
    AttributeRow(0x0020, "XOR-MAPPED-ADDRESS", _pack_xor_address, _unpack_xor_address),
    AttributeRow(0x8022, "SOFTWARE", _pack_text, _unpack_text),  # SERVER-NAME in RFC 3489
    AttributeRow(0x8028, "FINGERPRINT", _pack_uint32, _unpack_uint32),
    AttributeRow(0x802B, "RESPONSE-ORIGIN", _pack_address, _unpack_address),  # RFC 5780
    AttributeRow(0x802C, "OTHER-ADDRESS", _pack_address, _unpack_address),  # RFC 5780
)
_ROW_BY_TYPE = {row.type: row for row in ATTRIBUTES}
_ROW_BY_NAME = {row.name: row for row in ATTRIBUTES}


def _row_for_type(kind: int) -> AttributeRow:
    return _ROW_BY_TYPE.get(kind) or AttributeRow(kind, f"0x{kind:04X}", _raw, _raw)


def _row_for_name(name: str) -> AttributeRow:
    if name in _ROW_BY_NAME:
        return _ROW_BY_NAME[name]
    if re.fullmatch(r"0x[0-9A-F]{4}", name):
        return _row_for_type(int(name, 16))
    raise UsageError(f"unknown STUN attribute name {name!r}")


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
        row = _row_for_type(kind)
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
        row = _row_for_name(name)
        if row.name == "FINGERPRINT":
            # RFC 8489 §14.7: the CRC covers the header with a length that counts the fingerprint
            value = _crc(head + (len(body) + 8).to_bytes(2, "big") + ident + body)
        packed = row.pack(value, ident)
        body += struct.pack("!HH", row.type, len(packed)) + packed + bytes(-len(packed) % 4)
    return head + len(body).to_bytes(2, "big") + ident + body


def binding_response(request: bytes, source: Address) -> bytes | None:
    """The responder's answer to a datagram from ``source``, or None if it wants none.

    Raises ``DecodeError`` on malformed input. There is one address here, so CHANGE-REQUEST
    cannot be honoured: an RFC 8489 client gets 420 (RFC 5780 §7.2); an RFC 3489 client is
    answered anyway, since pystun3 retransmits forever on an error and reports no address after
    silence. A NAT type measured against this responder is therefore meaningless.
    """
    message = parse_message(request)
    if message.method != BINDING or message.message_class != StunClass.REQUEST:
        return None
    if not message.magic_cookie:
        return serialize_message(_reply(message, StunClass.SUCCESS, ("MAPPED-ADDRESS", source)))
    refused = _refused_attributes(message)
    if refused:
        return serialize_message(_reply(
            message, StunClass.ERROR, ("ERROR-CODE", (420, "Unknown Attribute")),
            ("UNKNOWN-ATTRIBUTES", refused), ("SOFTWARE", SOFTWARE_NAME), ("FINGERPRINT", 0)))
    return serialize_message(_reply(
        message, StunClass.SUCCESS, ("XOR-MAPPED-ADDRESS", source), ("MAPPED-ADDRESS", source),
        ("SOFTWARE", SOFTWARE_NAME), ("FINGERPRINT", 0)))


def _refused_attributes(request: StunMessage) -> tuple[int, ...]:
    # RFC 8489 §6.3.1: unknown comprehension-required attributes (type < 0x8000) get a 420.
    unknown = [int(name, 16) for name, _ in request.attributes
               if name.startswith("0x") and int(name, 16) < 0x8000]
    if request.attribute("CHANGE-REQUEST"):
        unknown.append(_ROW_BY_NAME["CHANGE-REQUEST"].type)
    return tuple(unknown)


def _reply(request: StunMessage, message_class: StunClass,
           *attributes: tuple[str, Any]) -> StunMessage:
    return StunMessage(request.method, message_class, request.transaction_id, attributes,
                       magic_cookie=request.magic_cookie)
