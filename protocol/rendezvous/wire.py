"""The rendezvous WebSocket JSON protocol (``/ws/register/{worker_id}``).

Field names are the original system's (seeds/003, seeds/000 section 1), so a worker written to
the original protocol works unchanged; new fields and messages are only ever added. Inbound
messages are frozen dataclasses found by their ``type`` in ``CLIENT_MESSAGES``; unknown extra
fields are ignored, so newer workers can talk to this service. Their fields are checked by
``protocol.rendezvous.fields``, which holds the limits. Outbound messages are built by the functions
of ``protocol.rendezvous.outbound``, as JSON-ready dicts; ``encode`` turns one into text. Both are
re-exported here: ``from protocol.rendezvous import wire`` is the one way in.

``parse_client_message`` takes hostile text and raises only ``DecodeError`` (or a subclass).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

from messages.errors import DecodeError, UnknownMessage
from protocol.json_text import json_object
from protocol.rendezvous.fields import (
    FINGERPRINT_PATTERN,
    MAX_ECHO_PAYLOAD_BYTES,
    MAX_JSON_DEPTH,
    MAX_PORT,
    MAX_TEXT_FRAME_BYTES,
    MAX_WORKER_ID_CHARS,
    MIN_PORT,
    WORKER_ID_PATTERN,
    echo_payload,
    fingerprint_field,
    ip_field,
    port_field,
    preview,
    required_field,
    validate_worker_id,
)
from protocol.rendezvous.identity import MAX_CERTIFICATE_B64, MAX_SIGNATURE_B64, b64_field
from protocol.rendezvous.outbound import (
    ACK_ERROR,
    ACK_OK,
    QUIC_ROLES,
    JsonValue,
    echo_response,
    encode,
    error,
    p2p_connection_offer,
    peer_disconnected,
    udp_endpoint_ack,
    udp_endpoint_refused,
)


@dataclass(frozen=True)
class RegisterPublicIp:
    TYPE: ClassVar[str] = "register_public_ip"
    ip: str
    cert_fingerprint: str | None = None

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RegisterPublicIp:
        return cls(ip_field(obj, "ip"), fingerprint_field(obj, "cert_fingerprint"))


@dataclass(frozen=True)
class UpdateUdpEndpoint:
    TYPE: ClassVar[str] = "update_udp_endpoint"
    udp_ip: str
    udp_port: int
    cert_fingerprint: str | None = None

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> UpdateUdpEndpoint:
        udp_ip = ip_field(obj, "udp_ip", reachable=True)
        return cls(udp_ip, port_field(obj, "udp_port"), fingerprint_field(obj, "cert_fingerprint"))


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
        return cls(echo_payload(obj.get("payload", "")))


@dataclass(frozen=True)
class ConnectRequest:
    TYPE: ClassVar[str] = "connect_request"
    peer_worker_id: str

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ConnectRequest:
        try:
            return cls(validate_worker_id(required_field(obj, "peer_worker_id")))
        except DecodeError as bad_id:
            raise DecodeError(f"field 'peer_worker_id': {bad_id.reason}") from None


@dataclass(frozen=True)
class IdentityProof:
    """New: the worker's certificate (DER) and its signature over the connection's challenge
    (``protocol.rendezvous.identity``); only as the first message of a connection."""

    TYPE: ClassVar[str] = "identity_proof"
    certificate: bytes
    signature: bytes

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> IdentityProof:
        return cls(b64_field(obj.get("certificate"), "certificate", MAX_CERTIFICATE_B64),
                   b64_field(obj.get("signature"), "signature", MAX_SIGNATURE_B64))


ClientMessage: TypeAlias = (
    RegisterPublicIp | UpdateUdpEndpoint | ExplicitDeregister | EchoRequest | ConnectRequest
    | IdentityProof
)
CLIENT_MESSAGES: dict[str, Any] = {
    cls.TYPE: cls
    for cls in (RegisterPublicIp, UpdateUdpEndpoint, ExplicitDeregister, EchoRequest,
                ConnectRequest, IdentityProof)
}


def parse_client_message(text: str | bytes) -> ClientMessage:
    """Decode one frame from a worker into its message, or raise ``DecodeError``."""
    obj = json_object(text, what="frame", limit=MAX_TEXT_FRAME_BYTES)
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise DecodeError("field 'type' is missing or not a string")
    cls = CLIENT_MESSAGES.get(kind)
    if cls is None:
        known = ", ".join(sorted(CLIENT_MESSAGES))
        raise UnknownMessage(f"unknown message type {preview(kind)}; known types: {known}")
    message: ClientMessage = cls.from_json(obj)
    return message


__all__ = [
    # inbound (worker -> service)
    "RegisterPublicIp", "UpdateUdpEndpoint", "ExplicitDeregister", "EchoRequest",
    "ConnectRequest", "IdentityProof", "ClientMessage", "CLIENT_MESSAGES", "parse_client_message",
    # limits and field checks (protocol.rendezvous.fields)
    "MAX_TEXT_FRAME_BYTES", "MAX_ECHO_PAYLOAD_BYTES", "MAX_JSON_DEPTH", "MAX_WORKER_ID_CHARS",
    "WORKER_ID_PATTERN", "FINGERPRINT_PATTERN", "MIN_PORT", "MAX_PORT", "validate_worker_id",
    # outbound (service -> worker, protocol.rendezvous.outbound)
    "JsonValue", "ACK_OK", "ACK_ERROR", "QUIC_ROLES", "encode", "udp_endpoint_ack",
    "udp_endpoint_refused", "p2p_connection_offer", "echo_response", "peer_disconnected", "error",
]
