"""The limits of a worker's frame and the checks of its fields, for hostile input.

Every check returns a valid value or raises ``DecodeError`` (or a subclass) with a reason that
names the field; the limits live here, where they are enforced.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from typing import Any

from messages.errors import DecodeError, FrameTooLarge
from protocol.rendezvous.outbound import JsonValue

# One WebSocket text frame from a worker. The largest legitimate message is an echo request;
# 8 KiB leaves room for its payload and refuses memory-hungry frames before json.loads runs.
MAX_TEXT_FRAME_BYTES = 8192
# An echo payload, measured as compact JSON in UTF-8. The response carries it twice (``payload``
# and the original's ``original_payload``), escaped to ASCII (at most 6 bytes a character): at
# most ~25 KiB, well under what a worker accepts (64 KiB here, 1 MiB for websockets' default).
MAX_ECHO_PAYLOAD_BYTES = 2048
# Nesting of an echo payload: bounds our own walk over it (json itself refuses ~1000 levels).
MAX_JSON_DEPTH = 16
# A worker id names a URL path segment and a log line: short, and no characters to escape.
MAX_WORKER_ID_CHARS = 64
WORKER_ID_PATTERN = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_WORKER_ID_CHARS}}}")
# A QUIC certificate fingerprint: SHA-256 of the DER certificate, as hex.
FINGERPRINT_PATTERN = re.compile(r"[0-9a-fA-F]{64}")
# A UDP port a peer can send to (port 0 means "any" and cannot be reached).
MIN_PORT, MAX_PORT = 1, 65535


def validate_worker_id(worker_id: object) -> str:
    """Return ``worker_id`` if it is 1-64 characters of ``[A-Za-z0-9_-]``."""
    if not isinstance(worker_id, str) or not WORKER_ID_PATTERN.fullmatch(worker_id):
        raise DecodeError(
            f"worker id must be 1-{MAX_WORKER_ID_CHARS} characters of A-Z a-z 0-9 _ -, "
            f"got {preview(worker_id)}"
        )
    return worker_id


def required_field(obj: dict[str, Any], name: str) -> Any:
    if name not in obj:
        raise DecodeError(f"field {name!r} is missing")
    return obj[name]


def ip_field(obj: dict[str, Any], name: str, *, reachable: bool = False) -> str:
    value = required_field(obj, name)
    if not isinstance(value, str):
        raise DecodeError(f"field {name!r} must be an IP address string, got {preview(value)}")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise DecodeError(f"field {name!r} is not an IP address: {preview(value)}") from None
    if reachable and (address.is_unspecified or address.is_multicast):
        raise DecodeError(f"field {name!r} is not an address a peer can send to: {address}")
    return str(address)


def port_field(obj: dict[str, Any], name: str) -> int:
    value = required_field(obj, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"field {name!r} must be an integer port, got {preview(value)}")
    if not MIN_PORT <= value <= MAX_PORT:
        raise DecodeError(f"field {name!r} must be within {MIN_PORT}..{MAX_PORT}, got {value}")
    return value


def fingerprint_field(obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not FINGERPRINT_PATTERN.fullmatch(value):
        raise DecodeError(f"field {name!r} must be a SHA-256 hex digest (64 hex digits)")
    return value.lower()


def echo_payload(value: JsonValue) -> JsonValue:
    pending: list[tuple[JsonValue, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise DecodeError(f"field 'payload' nests deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, float) and not math.isfinite(item):
            raise DecodeError("field 'payload' holds a number too large for JSON")
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)
    compact = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if len(compact.encode("utf-8", "surrogatepass")) > MAX_ECHO_PAYLOAD_BYTES:
        raise FrameTooLarge(f"field 'payload' is over {MAX_ECHO_PAYLOAD_BYTES} bytes as JSON")
    return value


def preview(value: object) -> str:
    return repr(value)[:40]


__all__ = [
    "MAX_TEXT_FRAME_BYTES", "MAX_ECHO_PAYLOAD_BYTES", "MAX_JSON_DEPTH", "MAX_WORKER_ID_CHARS",
    "WORKER_ID_PATTERN", "FINGERPRINT_PATTERN", "MIN_PORT", "MAX_PORT", "validate_worker_id",
    "required_field", "ip_field", "port_field", "fingerprint_field",
    "echo_payload", "preview",
]
