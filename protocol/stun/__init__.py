"""STUN messages (RFC 8489, which obsoletes RFC 5389, and classic RFC 3489), sans-I/O.

The public API of the STUN modules, re-exported so that callers import it from one place:
``protocol.stun.codec`` (the header, ``StunMessage``, ``parse_message``/``serialize_message``),
``protocol.stun.attributes`` (the attribute table, one row per attribute) and
``protocol.stun.responder`` (``binding_response``, the embedded responder's logic).
"""

from __future__ import annotations

from protocol.stun.attributes import (
    ATTRIBUTES,
    CHANGE_IP,
    CHANGE_PORT,
    MAX_TEXT_BYTES,
    Address,
    AttributeRow,
)
from protocol.stun.codec import (
    BINDING,
    FINGERPRINT_XOR,
    HEADER_LENGTH,
    MAGIC_COOKIE,
    MAX_MESSAGE_SIZE,
    StunClass,
    StunMessage,
    is_stun,
    parse_message,
    serialize_message,
)
from protocol.stun.responder import SOFTWARE_NAME, binding_response

__all__ = [
    "ATTRIBUTES", "CHANGE_IP", "CHANGE_PORT", "MAX_TEXT_BYTES", "Address", "AttributeRow",
    "BINDING", "FINGERPRINT_XOR", "HEADER_LENGTH", "MAGIC_COOKIE", "MAX_MESSAGE_SIZE",
    "StunClass", "StunMessage", "is_stun", "parse_message", "serialize_message",
    "SOFTWARE_NAME", "binding_response",
]
