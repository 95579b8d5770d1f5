"""What the rendezvous service sends a worker, decoded from hostile text (seeds/000 §2.1).

``server_message`` turns one WebSocket frame into a JSON object with a string ``type``;
``offer_from_json`` checks a ``p2p_connection_offer`` field by field into an ``Offer`` (the
worker's actors carry it on as the ``PeerOffer`` message). Both raise only ``DecodeError`` on bad
input.

An offer from a service of the original protocol has no ``quic_role`` (the lower worker id is
the client, as both sides compute) and no ``punch_token`` (one is derived from both ids).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from messages.errors import DecodeError
from protocol.certs import load_certificate, sign_challenge
from protocol.json_text import json_object
from protocol.rendezvous import wire
from protocol.rendezvous.identity import NONCE_BYTES, signed_bytes
from protocol.rendezvous.pairing import quic_role
from protocol.udp import TOKEN_SIZE

MAX_MESSAGE = 64 * 1024  # what the service's edge accepts; its messages are far smaller


@dataclass(frozen=True)
class Offer:
    """The peer the service paired us with; ``punch_token`` is hex."""

    peer_id: str
    host: str
    port: int
    quic_role: str  # ours: "client" or "server" (wire.QUIC_ROLES)
    peer_fingerprint: str | None
    punch_token: str


def derived_punch_token(worker_id: str, peer_id: str) -> str:
    """A token both workers compute alike, for a service that sends none. It is not secret
    (anyone who knows both ids has it); a service of this project sends a random one."""
    first, second = sorted((worker_id, peer_id))
    return hashlib.sha256(f"p2p-punch-token\0{first}\0{second}".encode()).hexdigest()[
        :2 * TOKEN_SIZE]


def offer_from_json(obj: dict[str, Any], worker_id: str) -> Offer:
    """A ``p2p_connection_offer`` from the service, checked field by field (``DecodeError``)."""
    peer_id = wire.validate_worker_id(obj.get("peer_worker_id"))
    host, port = obj.get("peer_udp_ip"), obj.get("peer_udp_port")
    try:
        host = str(ipaddress.ip_address(host if isinstance(host, str) else ""))
        port = int(port) if isinstance(port, int | str) and not isinstance(port, bool) else 0
    except ValueError:
        raise DecodeError(f"offer has a bad peer endpoint {str(host)[:40]}:{port!r}") from None
    if not wire.MIN_PORT <= port <= wire.MAX_PORT:
        raise DecodeError(f"offer has a bad peer port {port}")
    role = obj.get("quic_role") or quic_role(worker_id, peer_id)
    fingerprint = obj.get("peer_cert_fingerprint")
    token = obj.get("punch_token") or derived_punch_token(worker_id, peer_id)
    if role not in wire.QUIC_ROLES:
        raise DecodeError(f"offer has an unknown quic_role {str(role)[:20]!r}")
    if fingerprint is not None and not (isinstance(fingerprint, str)
                                        and wire.FINGERPRINT_PATTERN.fullmatch(fingerprint)):
        raise DecodeError("offer has a peer_cert_fingerprint that is not 64 hex digits")
    if not (isinstance(token, str) and len(token) == 2 * TOKEN_SIZE and is_hex(token)):
        raise DecodeError(f"offer has a punch_token that is not {TOKEN_SIZE} bytes of hex")
    return Offer(peer_id, host, port, role, fingerprint and fingerprint.lower(), token.lower())


def identity_proof(worker_id: str, nonce: str, cert_pem: bytes, key_pem: bytes) -> dict[str, Any]:
    """The ``identity_proof`` answering the service's ``X-Identity-Challenge`` ``nonce``."""
    if len(nonce) != 2 * NONCE_BYTES or not is_hex(nonce):
        raise DecodeError(f"the service's identity challenge is not {NONCE_BYTES} bytes of hex")
    der = load_certificate(cert_pem).public_bytes(Encoding.DER)
    signature = sign_challenge(key_pem, signed_bytes(nonce, worker_id))
    return {"type": "identity_proof", "certificate": base64.b64encode(der).decode(),
            "signature": base64.b64encode(signature).decode()}


def is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def server_message(text: str | bytes) -> dict[str, Any]:
    """One frame from the service as a JSON object with a string ``type``, or ``DecodeError``."""
    obj = json_object(text, what="a message from the service", limit=MAX_MESSAGE)
    if not isinstance(obj.get("type"), str):
        raise DecodeError("the service sent a message without a 'type'")
    return obj


__all__ = ["MAX_MESSAGE", "Offer", "derived_punch_token", "offer_from_json", "identity_proof",
           "is_hex", "server_message"]
