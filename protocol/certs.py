"""The worker's identity: a self-signed certificate, its fingerprint, and challenge signatures.

Peers never trust a CA here: the rendezvous service hands each worker its peer's certificate
fingerprint (SHA-256 of the DER encoding, lowercase hex) and the tunnel pins it.

Keys are EC P-256. aioquic 1.7.2 also offers Ed25519, but only when the OpenSSL backend
supports it (``tls.Context`` checks ``ed25519_supported()``), whereas ecdsa_secp256r1_sha256 is
mandatory to implement in TLS 1.3 (RFC 8446 §9.1), so every QUIC stack accepts it. Challenge
signatures use the same key: ECDSA with SHA-256 (Ed25519 keys found on disk work too).

Key material is never logged; only paths and fingerprints are.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from messages.errors import AuthError, ConfigError, DecodeError

logger = logging.getLogger(__name__)

PEM_MARKER = b"-----BEGIN"
# Workers keep their identity for years; the peer pins the fingerprint, not the dates.
VALIDITY = datetime.timedelta(days=3650)
SigningKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def generate_self_signed(common_name: str) -> tuple[bytes, bytes]:
    """A new EC P-256 key and a self-signed certificate for it, both PEM: ``(cert, key)``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + VALIDITY)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def load_or_create(
    cert_path: str | Path, key_path: str | Path, common_name: str = "p2p-worker"
) -> tuple[bytes, bytes]:
    """Read ``cert.pem``/``key.pem`` if both exist, else generate and write them."""
    cert_file, key_file = Path(cert_path), Path(key_path)
    if cert_file.exists() != key_file.exists():
        raise ConfigError(f"found only one of {cert_file} and {key_file}; provide both or neither")
    if cert_file.exists():
        cert_pem, key_pem = cert_file.read_bytes(), key_file.read_bytes()
        check_key_pair(cert_pem, key_pem)
        logger.info("loaded certificate %s (fingerprint %s)", cert_file, fingerprint(cert_pem))
        return cert_pem, key_pem
    cert_pem, key_pem = generate_self_signed(common_name)
    cert_file.write_bytes(cert_pem)
    # The key is created owner-only from the start, never world-readable for a moment.
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_pem)
    logger.info("generated certificate %s (fingerprint %s)", cert_file, fingerprint(cert_pem))
    return cert_pem, key_pem


def check_key_pair(cert_pem: bytes, key_pem: bytes) -> None:
    """Raise ConfigError unless ``key_pem`` is the private half of ``cert_pem``."""
    try:
        cert_key = load_certificate(cert_pem).public_key()
        key = load_signing_key(key_pem)
    except DecodeError as exc:
        raise ConfigError(f"unusable certificate or key: {exc.reason}") from None
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*raw) != cert_key.public_bytes(*raw):
        raise ConfigError("the private key does not belong to the certificate")


def fingerprint(cert: bytes | str) -> str:
    """SHA-256 of the certificate's DER encoding, lowercase hex; accepts PEM or DER."""
    data = cert.encode() if isinstance(cert, str) else cert
    if data.lstrip().startswith(PEM_MARKER):
        data = load_certificate(data).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(data).hexdigest()


def load_certificate(cert: bytes) -> x509.Certificate:
    """Parse a PEM or DER certificate; raises only DecodeError."""
    try:
        if cert.lstrip().startswith(PEM_MARKER):
            return x509.load_pem_x509_certificate(cert)
        return x509.load_der_x509_certificate(cert)
    except ValueError as exc:
        raise DecodeError(f"not an X.509 certificate: {exc}") from None


def load_signing_key(key_pem: bytes) -> SigningKey:
    """Parse an unencrypted PEM private key of a type we sign with (EC or Ed25519)."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        # The exception text never includes key bytes, only the parse failure.
        raise DecodeError(f"not an unencrypted PEM private key: {type(exc).__name__}") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)):
        raise DecodeError(f"unsupported private key type {type(key).__name__}")
    return key


def sign_challenge(key_pem: bytes, message: bytes) -> bytes:
    """Sign ``message`` with our private key (ECDSA-SHA256, or Ed25519)."""
    key = load_signing_key(key_pem)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    return key.sign(message, ec.ECDSA(hashes.SHA256()))


def verify_challenge(cert: bytes, message: bytes, signature: bytes) -> None:
    """Raise AuthError unless ``signature`` over ``message`` was made by ``cert``'s key."""
    try:
        public_key = load_certificate(cert).public_key()
    except (DecodeError, ValueError) as exc:
        raise AuthError(f"unusable peer certificate: {exc}") from None
    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, message)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        else:
            raise AuthError(f"unsupported peer key type {type(public_key).__name__}")
    except InvalidSignature:
        raise AuthError("the challenge signature does not match the peer certificate") from None


__all__ = [
    "check_key_pair",
    "fingerprint",
    "generate_self_signed",
    "load_certificate",
    "load_or_create",
    "load_signing_key",
    "sign_challenge",
    "verify_challenge",
]
