"""STUN attributes (RFC 8489 section 14, RFC 5780, RFC 3489): one table row per attribute.

A table-driven codec: ``ATTRIBUTES`` holds one row per attribute, ``(type, name, pack,
unpack)``. An attribute nobody declared is kept as raw bytes under the name ``"0x8050"`` so
that a message round-trips unchanged. Every ``pack``/``unpack`` also takes the XOR key, the
cookie and transaction id, which only the XOR-ed addresses use.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from collections.abc import Callable
from typing import Any, NamedTuple

from messages.errors import DecodeError, FrameTooLarge, UsageError

# RFC 8489 §14.8 and §14.14: reason phrases and SOFTWARE are under 128 characters (763 bytes).
MAX_TEXT_BYTES = 763
CHANGE_IP = 0x04  # RFC 5780 §7.2 / RFC 3489 §11.2.4 CHANGE-REQUEST flags
CHANGE_PORT = 0x02

Address = tuple[str, int]


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


def row_for_type(kind: int) -> AttributeRow:
    """The row of attribute type ``kind``; one nobody declared is read and written raw."""
    return _ROW_BY_TYPE.get(kind) or AttributeRow(kind, f"0x{kind:04X}", _raw, _raw)


def row_for_name(name: str) -> AttributeRow:
    """The row of an attribute name, ``"0x8050"`` style included; another is our misuse."""
    if name in _ROW_BY_NAME:
        return _ROW_BY_NAME[name]
    if re.fullmatch(r"0x[0-9A-F]{4}", name):
        return row_for_type(int(name, 16))
    raise UsageError(f"unknown STUN attribute name {name!r}")
