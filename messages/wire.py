"""The rendezvous WebSocket JSON protocol (``/ws/register/{worker_id}``).

Field names are the original system's (seeds/003, seeds/000 section 1), so a worker written to
the original protocol works unchanged; new fields and messages are only ever added. Inbound
messages are frozen dataclasses found by their ``type`` in ``CLIENT_MESSAGES``; unknown extra
fields are ignored, so newer workers can talk to this service. Outbound messages are built by
the functions at the end, as JSON-ready dicts; ``encode`` turns one into text.

``parse_client_message`` takes hostile text and raises only ``DecodeError`` (or a subclass).
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

from messages.errors import DecodeError, FrameTooLarge, UnknownMessage

JsonValue: TypeAlias = None | bool | int | float | str | list[Any] | dict[str, Any]

# One WebSocket text frame from a worker. The largest legitimate message is an echo request;
# 8 KiB leaves room for its payload and refuses memory-hungry frames before json.loads runs.
MAX_FRAME_BYTES = 8192
# An echo payload, measured as compact JSON. The response carries it twice (``payload`` and the
# original's ``original_payload``), so 2 KiB keeps the response under MAX_FRAME_BYTES too.
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
# ``udp_endpoint_ack`` status values. The original service sent "success"; its workers only
# log the value, so any string keeps them working.
ACK_OK, ACK_ERROR = "ok", "error"
QUIC_ROLES = ("client", "server")


def validate_worker_id(worker_id: object) -> str:
    """Return ``worker_id`` if it is 1-64 characters of ``[A-Za-z0-9_-]``."""
    if not isinstance(worker_id, str) or not WORKER_ID_PATTERN.fullmatch(worker_id):
        raise DecodeError(
            f"worker id must be 1-{MAX_WORKER_ID_CHARS} characters of A-Z a-z 0-9 _ -, "
            f"got {_preview(worker_id)}"
        )
    return worker_id


@dataclass(frozen=True)
class RegisterPublicIp:
    TYPE: ClassVar[str] = "register_public_ip"
    ip: str
    cert_fingerprint: str | None = None

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RegisterPublicIp:
        return cls(_ip(obj, "ip"), _fingerprint(obj, "cert_fingerprint"))


@dataclass(frozen=True)
class UpdateUdpEndpoint:
    TYPE: ClassVar[str] = "update_udp_endpoint"
    udp_ip: str
    udp_port: int
    cert_fingerprint: str | None = None

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> UpdateUdpEndpoint:
        udp_ip = _ip(obj, "udp_ip", reachable=True)
        return cls(udp_ip, _port(obj, "udp_port"), _fingerprint(obj, "cert_fingerprint"))


@dataclass(frozen=True)
class ExplicitDeregister:
    TYPE: ClassVar[str] = "explicit_deregister"

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ExplicitDeregister:
        return cls()


@dataclass(frozen=True)
class EchoRequest:
    TYPE: ClassVar[str] = "echo_request"
    payload: JsonValue

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> EchoRequest:
        # The original service echoed "" when a worker sent no payload; keep that.
        return cls(_echo_payload(obj.get("payload", "")))


@dataclass(frozen=True)
class ConnectRequest:
    TYPE: ClassVar[str] = "connect_request"
    peer_worker_id: str

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ConnectRequest:
        try:
            return cls(validate_worker_id(_required(obj, "peer_worker_id")))
        except DecodeError as bad_id:
            raise DecodeError(f"field 'peer_worker_id': {bad_id.reason}") from None


ClientMessage: TypeAlias = (
    RegisterPublicIp | UpdateUdpEndpoint | ExplicitDeregister | EchoRequest | ConnectRequest
)
CLIENT_MESSAGES: dict[str, Any] = {
    cls.TYPE: cls
    for cls in (RegisterPublicIp, UpdateUdpEndpoint, ExplicitDeregister, EchoRequest,
                ConnectRequest)
}


def parse_client_message(text: str | bytes) -> ClientMessage:
    """Decode one frame from a worker into its message, or raise ``DecodeError``."""
    obj = _load_object(_as_text(text))
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise DecodeError("field 'type' is missing or not a string")
    cls = CLIENT_MESSAGES.get(kind)
    if cls is None:
        known = ", ".join(sorted(CLIENT_MESSAGES))
        raise UnknownMessage(f"unknown message type {_preview(kind)}; known types: {known}")
    message: ClientMessage = cls.from_json(obj)
    return message


def _as_text(frame: str | bytes) -> str:
    size = len(frame) if isinstance(frame, bytes) else len(frame.encode("utf-8", "surrogatepass"))
    if size > MAX_FRAME_BYTES:
        raise FrameTooLarge(f"frame of {size} bytes is over the {MAX_FRAME_BYTES}-byte limit")
    if isinstance(frame, str):
        return frame
    try:
        return frame.decode("utf-8")
    except UnicodeDecodeError as bad_bytes:
        raise DecodeError(f"frame is not UTF-8 text: {bad_bytes.reason}") from None


def _load_object(text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as bad_json:  # JSONDecodeError is a ValueError
        raise DecodeError(f"frame is not valid JSON: {bad_json}") from None
    if not isinstance(obj, dict):
        raise DecodeError(f"frame must be a JSON object, got {type(obj).__name__}")
    return obj


def _refuse_constant(name: str) -> None:
    # NaN and Infinity are not JSON (RFC 8259 section 6); echoing them would emit invalid JSON.
    raise ValueError(f"{name} is not a JSON number")


def _required(obj: dict[str, Any], name: str) -> Any:
    if name not in obj:
        raise DecodeError(f"field {name!r} is missing")
    return obj[name]


def _ip(obj: dict[str, Any], name: str, *, reachable: bool = False) -> str:
    value = _required(obj, name)
    if not isinstance(value, str):
        raise DecodeError(f"field {name!r} must be an IP address string, got {_preview(value)}")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise DecodeError(f"field {name!r} is not an IP address: {_preview(value)}") from None
    if reachable and (address.is_unspecified or address.is_multicast):
        raise DecodeError(f"field {name!r} is not an address a peer can send to: {address}")
    return str(address)


def _port(obj: dict[str, Any], name: str) -> int:
    value = _required(obj, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"field {name!r} must be an integer port, got {_preview(value)}")
    if not MIN_PORT <= value <= MAX_PORT:
        raise DecodeError(f"field {name!r} must be within {MIN_PORT}..{MAX_PORT}, got {value}")
    return value


def _fingerprint(obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not FINGERPRINT_PATTERN.fullmatch(value):
        raise DecodeError(f"field {name!r} must be a SHA-256 hex digest (64 hex digits)")
    return value.lower()


def _echo_payload(value: JsonValue) -> JsonValue:
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
    if len(encode(value).encode("utf-8", "surrogatepass")) > MAX_ECHO_PAYLOAD_BYTES:
        raise FrameTooLarge(f"field 'payload' is over {MAX_ECHO_PAYLOAD_BYTES} bytes as JSON")
    return value


def _preview(value: object) -> str:
    return repr(value)[:40]


# --- service -> worker -------------------------------------------------------------------------


def encode(message: JsonValue) -> str:
    """Compact JSON text of an outbound message (bytes are counted as UTF-8 by the limits)."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def udp_endpoint_ack(udp_ip: str, udp_port: int) -> dict[str, Any]:
    return {"type": "udp_endpoint_ack", "status": ACK_OK, "udp_ip": udp_ip, "udp_port": udp_port}


def udp_endpoint_refused(detail: str) -> dict[str, Any]:
    """The original's answer to a bad ``update_udp_endpoint``."""
    return {"type": "udp_endpoint_ack", "status": ACK_ERROR, "detail": detail}


def p2p_connection_offer(
    peer_worker_id: str, peer_udp_ip: str, peer_udp_port: int, *, quic_role: str,
    peer_cert_fingerprint: str | None, punch_token: str,
) -> dict[str, Any]:
    return {
        "type": "p2p_connection_offer", "peer_worker_id": peer_worker_id,
        "peer_udp_ip": peer_udp_ip, "peer_udp_port": peer_udp_port, "quic_role": quic_role,
        "peer_cert_fingerprint": peer_cert_fingerprint, "punch_token": punch_token,
    }


def echo_response(payload: JsonValue, worker_id: str) -> dict[str, Any]:
    # ``original_payload`` and ``processed_by_rendezvous`` are the original's fields.
    return {
        "type": "echo_response", "payload": payload, "original_payload": payload,
        "processed_by_rendezvous": f"Rendezvous echoed the payload for worker {worker_id}",
    }


def peer_disconnected(peer_worker_id: str, reason: str) -> dict[str, Any]:
    return {"type": "peer_disconnected", "peer_worker_id": peer_worker_id, "reason": reason}


def error(message: str, code: str) -> dict[str, Any]:
    return {"type": "error", "message": message, "code": code}
