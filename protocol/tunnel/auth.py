"""Mutual authentication of a tunnel's two workers against the fingerprints the rendezvous gave.

Server -> client: the TLS 1.3 handshake proves the server holds its certificate's key
(CertificateVerify, RFC 8446 §4.4.3, which aioquic checks even with verification off); the client
then pins that certificate's SHA-256 fingerprint.

Client -> server: aioquic 1.7.2 cannot request a client certificate (its
``tls.Context._request_client_certificate`` is private and "for test purposes only"), so the
server challenges the client inside the tunnel instead: a random 32-byte nonce on the control
stream, answered by the client's certificate and a signature over ``transcript()``. The transcript
binds the nonce to this connection (its original destination connection id) and to both
identities, so a proof cannot be replayed to another server or on another connection.
"""

from __future__ import annotations

import os
import re

from aioquic.quic.connection import QuicConnection
from cryptography.hazmat.primitives import serialization

from messages.errors import AuthError, ConfigError, DecodeError
from protocol.certs import fingerprint, load_certificate, sign_challenge, verify_challenge
from protocol.tunnel.frames import (
    AuthAccepted,
    AuthChallenge,
    AuthProof,
    Frame,
    encode_stream_frame,
)

AUTH_LABEL = b"p2p-tunnel client auth v1\x00"
NONCE_BYTES = 32
FINGERPRINT_PATTERN = re.compile(r"[0-9a-f]{64}")


def parse_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as 64 lowercase hex digits (colons and case are forgiven)."""
    normal = text.replace(":", "").strip().lower()
    if not FINGERPRINT_PATTERN.fullmatch(normal):
        raise ConfigError(f"a certificate fingerprint is 64 hex digits (SHA-256), got {text!r:.80}")
    return normal


def new_challenge() -> AuthChallenge:
    return AuthChallenge(os.urandom(NONCE_BYTES))


def transcript(nonce: bytes, connection_id: bytes, server_fp: str, client_fp: str) -> bytes:
    """The bytes the client signs: label, nonce, connection id, both fingerprints."""
    cid = bytes([len(connection_id)]) + connection_id
    return AUTH_LABEL + nonce + cid + bytes.fromhex(server_fp) + bytes.fromhex(client_fp)


def make_proof(
    challenge: AuthChallenge, connection_id: bytes, server_fp: str, cert_pem: bytes, key_pem: bytes
) -> AuthProof:
    """The client's answer to ``challenge``."""
    if len(challenge.nonce) != NONCE_BYTES:
        size = len(challenge.nonce)
        raise AuthError(f"the server's challenge is {size} bytes, not {NONCE_BYTES}")
    cert_der = load_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    message = transcript(challenge.nonce, connection_id, server_fp, fingerprint(cert_der))
    return AuthProof(cert_der, sign_challenge(key_pem, message))


def check_proof(
    proof: AuthProof, nonce: bytes, connection_id: bytes, server_fp: str, pinned_client_fp: str
) -> None:
    """Raise AuthError unless ``proof`` comes from the pinned client for this challenge."""
    try:
        client_fp = fingerprint(proof.certificate)
    except DecodeError as exc:
        raise AuthError(f"the client's certificate is unreadable: {exc.reason}") from None
    if client_fp != pinned_client_fp:
        raise AuthError(
            f"client certificate {client_fp[:16]}... is not the pinned {pinned_client_fp[:16]}..."
        )
    message = transcript(nonce, connection_id, server_fp, client_fp)
    verify_challenge(proof.certificate, message, proof.signature)


def check_server_certificate(quic: QuicConnection, pinned_server_fp: str) -> None:
    """Raise AuthError unless the server's TLS certificate has the pinned fingerprint."""
    # aioquic 1.7.2 exposes the peer certificate only as this private attribute; it is set
    # from the Certificate message before CertificateVerify is checked against it.
    certificate = getattr(quic.tls, "_peer_certificate", None)
    if certificate is None:
        raise AuthError("the server presented no certificate")
    server_fp = fingerprint(certificate.public_bytes(serialization.Encoding.DER))
    if server_fp != pinned_server_fp:
        raise AuthError(
            f"server certificate {server_fp[:16]}... is not the pinned {pinned_server_fp[:16]}..."
        )


class ControlStream:
    """The challenge exchange on the server's first bidirectional stream, from one side."""

    def __init__(
        self, quic: QuicConnection, cert_pem: bytes, key_pem: bytes, local_fp: str, peer_fp: str
    ) -> None:
        self._quic = quic
        self._cert_pem, self._key_pem = cert_pem, key_pem
        self._local_fp, self._peer_fp = local_fp, peer_fp
        self._stream_id: int | None = None
        self._nonce = b""

    def send_challenge(self) -> None:
        """Server, once TLS is done: open the control stream with a fresh challenge."""
        challenge = new_challenge()
        self._nonce = challenge.nonce
        self._stream_id = self._quic.get_next_available_stream_id()
        self._send(challenge)

    def on_frame(self, stream_id: int, frame: Frame) -> bool:
        """True once this side has authenticated its peer; raises AuthError or DecodeError."""
        if self._quic.configuration.is_client:
            return self._client_frame(stream_id, frame)
        if isinstance(frame, AuthProof) and stream_id == self._stream_id:
            cid = self._quic.original_destination_connection_id
            check_proof(frame, self._nonce, cid, self._local_fp, self._peer_fp)
            self._send(AuthAccepted())
            return True
        raise DecodeError(f"server got {type(frame).__name__} on stream {stream_id}")

    def _client_frame(self, stream_id: int, frame: Frame) -> bool:
        server_bidi = stream_id & 3 == 1  # RFC 9000 §2.1: server-initiated, bidirectional
        if isinstance(frame, AuthChallenge) and self._stream_id is None and server_bidi:
            self._stream_id = stream_id
            cid = self._quic.original_destination_connection_id
            self._send(make_proof(frame, cid, self._peer_fp, self._cert_pem, self._key_pem))
            return False
        if isinstance(frame, AuthAccepted) and stream_id == self._stream_id:
            return True
        raise DecodeError(f"client got {type(frame).__name__} on stream {stream_id}")

    def _send(self, frame: Frame) -> None:
        self._quic.send_stream_data(self._stream_id, encode_stream_frame(frame))  # type: ignore[arg-type]


__all__ = [
    "NONCE_BYTES",
    "ControlStream",
    "check_proof",
    "check_server_certificate",
    "make_proof",
    "new_challenge",
    "parse_fingerprint",
    "transcript",
]
