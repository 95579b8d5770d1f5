"""The service -> worker half of the rendezvous WebSocket JSON protocol.

Each function builds one outbound message as a JSON-ready dict, with the original system's
field names (seeds/003, seeds/000 section 1); ``encode`` turns one into compact text.
"""

from __future__ import annotations

import json
from typing import Any, TypeAlias

JsonValue: TypeAlias = None | bool | int | float | str | list[Any] | dict[str, Any]

# ``udp_endpoint_ack`` status values, the original service's.
ACK_OK, ACK_ERROR = "success", "error"
QUIC_ROLES = ("client", "server")


def encode(message: JsonValue) -> str:
    """Compact JSON text of an outbound message, ASCII only: every character outside ASCII is
    escaped, so any string (even one holding a lone surrogate) becomes text a WebSocket can
    carry, and what one worker sent can never make the frame to another unsendable."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


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


__all__ = [
    "JsonValue", "ACK_OK", "ACK_ERROR", "QUIC_ROLES", "encode", "udp_endpoint_ack",
    "udp_endpoint_refused", "p2p_connection_offer", "echo_response", "peer_disconnected", "error",
]
