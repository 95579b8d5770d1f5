"""The aioquic plumbing of a tunnel: configuration, the accept check, keepalive, close wording."""

from __future__ import annotations

import ssl
from enum import IntEnum

from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated
from aioquic.quic.packet import QuicErrorCode, QuicPacketType, pull_quic_header
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from protocol.tunnel.events import PingAcked

ALPN = "p2p-tunnel/1"
# RFC 9000 §14.1: a client's Initial datagram is padded to at least 1200 bytes; anything
# smaller cannot open a connection (and answering it would amplify a spoofed packet).
MIN_INITIAL_BYTES = 1200


class TunnelError(IntEnum):
    """Application error codes in our CONNECTION_CLOSE frames (RFC 9000 §20.2)."""

    NO_ERROR = 0x0
    AUTH_FAILED = 0x100
    PROTOCOL_VIOLATION = 0x101
    SETUP_TIMEOUT = 0x102


def quic_configuration(
    is_client: bool, cert_pem: bytes, key_pem: bytes, idle_timeout: float
) -> QuicConfiguration:
    config = QuicConfiguration(
        is_client=is_client,
        alpn_protocols=[ALPN],
        idle_timeout=idle_timeout,
        # Self-signed certificates: the fingerprint pin replaces CA verification.
        verify_mode=ssl.CERT_NONE,
    )
    if not is_client:
        config.certificate = x509.load_pem_x509_certificate(cert_pem)
        config.private_key = serialization.load_pem_private_key(key_pem, None)
    return config


def initial_destination_cid(data: bytes, config: QuicConfiguration) -> bytes | None:
    """The connection id a client's Initial datagram names, or None if ``data`` is not one."""
    try:
        header = pull_quic_header(Buffer(data=data), config.connection_id_length)
    except ValueError:
        return None
    if header.packet_type != QuicPacketType.INITIAL or len(data) < MIN_INITIAL_BYTES:
        return None
    if header.version not in config.supported_versions:
        return None
    return header.destination_cid


def describe_termination(event: ConnectionTerminated, idle_timeout: float) -> str:
    """Why a connection we did not close ended, in words a user can act on."""
    if event.frame_type is None:  # an application CONNECTION_CLOSE (RFC 9000 §19.19)
        return f"peer closed the tunnel: {event.reason_phrase or 'no reason given'}"
    if event.error_code == QuicErrorCode.APPLICATION_ERROR:
        # RFC 9000 §10.2.3: an application close before the handshake completes travels as
        # APPLICATION_ERROR with its reason removed; ours does that when the pin check fails.
        return "peer closed the tunnel during the handshake (did it refuse our certificate?)"
    if event.reason_phrase == "Idle timeout":  # aioquic's own wording (connection.py)
        return f"idle timeout: nothing from the peer for {idle_timeout} s"
    return f"QUIC error {event.error_code:#x}: {event.reason_phrase or 'no reason given'}"


class Keepalive:
    """A QUIC PING every ``interval`` while up (RFC 9000 §10.1.2): it resets both idle timers
    and keeps the NAT mapping of the punched path fresh; its ack gives an RTT sample."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.next_at: float | None = None
        self._sent: dict[int, float] = {}
        self._next_uid = 1

    def start(self, now: float) -> None:
        self.next_at = now + self.interval

    def stop(self) -> None:
        self.next_at = None

    def ping_if_due(self, quic: QuicConnection, now: float) -> None:
        if self.next_at is None or now < self.next_at:
            return
        uid, self._next_uid = self._next_uid, self._next_uid + 1
        quic.send_ping(uid)
        self._sent[uid] = now
        self.next_at = now + self.interval

    def acked(self, uid: int, now: float) -> PingAcked:
        return PingAcked(uid, now - self._sent.pop(uid, now))


__all__ = [
    "ALPN",
    "MIN_INITIAL_BYTES",
    "Keepalive",
    "TunnelError",
    "describe_termination",
    "initial_destination_cid",
    "quic_configuration",
]
