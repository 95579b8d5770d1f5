"""The original system's datagrams (seed 003): JSON objects and the text hole-punch ping.

The original sent one JSON object per datagram, told apart by its ``"type"``:
``chat_message``, ``p2p_ping_request`` and ``p2p_ping_response``; its hole punching sent
``P2P_HOLE_PUNCH_PING_FROM_<worker id>_NUM_<n>`` as plain text. ``decode_legacy`` takes hostile
bytes and fails only with ``DecodeError`` (and its subclasses).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeGuard

from messages.errors import DecodeError, FrameTooLarge, UnknownMessage
from protocol.json_text import json_object
from protocol.udp.layouts import WORKER_ID

MAX_LEGACY_SIZE = 8192  # the original sent one JSON chat per datagram; bounds json.loads work
LEGACY_PUNCH = re.compile(rb"P2P_HOLE_PUNCH_PING_FROM_([A-Za-z0-9_-]{1,64})_NUM_([0-9]{1,9})")


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


def legacy_json_object(data: bytes) -> dict[str, Any] | None:
    """The JSON object of an original-system datagram with a string "type", else None."""
    try:
        message = json_object(data, what="legacy datagram", limit=MAX_LEGACY_SIZE)
    except DecodeError:
        return None
    return message if isinstance(message.get("type"), str) else None


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
    message = legacy_json_object(data)
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
