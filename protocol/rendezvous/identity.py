"""Which key owns a worker id at the rendezvous service, sans-I/O.

Proof of possession: at the WebSocket handshake the service sends a fresh random nonce in the
``X-Identity-Challenge`` response header. A worker proves it holds the private key of its
certificate by making its first message ``identity_proof {certificate, signature}`` (both
base64): the signature covers ``PROOF_LABEL | nonce | worker id`` (``signed_bytes``), so a proof
is good for one connection and one id only. The certificate's SHA-256 fingerprint is then the
one every offer about this worker carries; fingerprints the worker merely announces in
``register_public_ip`` or ``update_udp_endpoint`` never replace it.

``IdentityTable`` holds the rule:

- an id belongs to the first key that proves it;
- a connection for an owned id is admitted only with a proof from that same key (it then
  replaces the live connection, as before); anything else is refused and the live worker is
  untouched;
- an id is released by ``explicit_deregister`` at once, or ``grace`` seconds after its
  connection closed (a restarting worker comes back with the same key well within it);
- a connection without a proof (the original protocol's workers have no key) is admitted only
  when unproven ids are allowed, and only for an id no key owns; such a connection may be
  replaced by anyone, as in the original.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum

from messages.errors import DecodeError
from protocol.certs import fingerprint, verify_challenge

PROOF_LABEL = b"p2p-rendezvous identity v1\0"
CHALLENGE_HEADER = "x-identity-challenge"
NONCE_BYTES = 32
# Seconds an id stays bound to its key after its connection closed: a worker restarting (or
# reconnecting after a network cut, with its backoff capped at 10 s) is back well within it.
DEFAULT_GRACE = 60.0
# Seconds a connection that must prove (its id is owned, or proofs are required) has to do it.
IDENTITY_WINDOW = 10.0
# A certificate of ours is ~500 bytes of DER; 4 KiB of base64 leaves room for larger keys.
MAX_CERTIFICATE_B64 = 4096
MAX_SIGNATURE_B64 = 512


def new_nonce() -> str:
    return secrets.token_hex(NONCE_BYTES)


def signed_bytes(nonce: str, worker_id: str) -> bytes:
    """What a worker signs: the label, the service's nonce (hex) and its own id."""
    return PROOF_LABEL + nonce.encode("ascii") + b"\0" + worker_id.encode("ascii")


def b64_field(value: object, name: str, limit: int) -> bytes:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise DecodeError(f"field {name!r} must be base64 text of at most {limit} characters")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError(f"field {name!r} is not base64") from None


def verify_proof(certificate: bytes, signature: bytes, nonce: str, worker_id: str) -> str:
    """The fingerprint of ``certificate`` if ``signature`` proves its key; else ``AuthError``."""
    verify_challenge(certificate, signed_bytes(nonce, worker_id), signature)
    return fingerprint(certificate)


class Admission(Enum):
    ADMIT = "admit"  # take the id (replacing any live connection that holds it)
    WAIT = "wait"  # the id is owned, or proofs are required: admit only after a proof
    REFUSE = "refuse"  # a different key owns the id


@dataclass(slots=True)
class Owner:
    fingerprint: str
    released_at: float | None = None  # when its last connection closed; None while live


class IdentityTable:
    """Worker id -> the fingerprint of the key that owns it, with release after ``grace``."""

    def __init__(self, *, allow_unproven: bool = True, grace: float = DEFAULT_GRACE) -> None:
        self.allow_unproven, self.grace = allow_unproven, grace
        self._owners: dict[str, Owner] = {}
        self._releasing: OrderedDict[str, float] = OrderedDict()  # id -> released_at, in order

    def __len__(self) -> int:
        return len(self._owners)

    def owner(self, worker_id: str, now: float) -> str | None:
        self._expire(now)
        owner = self._owners.get(worker_id)
        return owner.fingerprint if owner else None

    def on_connect(self, worker_id: str, now: float) -> Admission:
        """A new connection, before any proof."""
        if self.owner(worker_id, now) is None and self.allow_unproven:
            return Admission.ADMIT
        return Admission.WAIT

    def on_proof(self, worker_id: str, proven: str, now: float) -> Admission:
        """A valid proof by the key ``proven``: the id is bound to it unless another owns it."""
        owner = self.owner(worker_id, now)
        if owner is not None and owner != proven:
            return Admission.REFUSE
        self._owners[worker_id] = Owner(proven)
        self._releasing.pop(worker_id, None)
        return Admission.ADMIT

    def on_unproven_frame(self, worker_id: str, now: float) -> Admission:
        """A waiting connection spoke without proving: it may go on only for a free id."""
        free = self.allow_unproven and self.owner(worker_id, now) is None
        return Admission.ADMIT if free else Admission.REFUSE

    def disconnected(self, worker_id: str, proven: str, now: float) -> None:
        """The owner's live connection closed: the id is released after ``grace``."""
        owner = self._owners.get(worker_id)
        if owner is not None and owner.fingerprint == proven and owner.released_at is None:
            owner.released_at = now
            self._releasing[worker_id] = now
        self._expire(now)

    def release(self, worker_id: str) -> None:
        """``explicit_deregister``: the id is free at once."""
        self._owners.pop(worker_id, None)
        self._releasing.pop(worker_id, None)

    def _expire(self, now: float) -> None:
        # Release times only grow, so the oldest is first: amortised O(1) per call.
        while self._releasing:
            worker_id, released_at = next(iter(self._releasing.items()))
            if now - released_at < self.grace:
                return
            del self._releasing[worker_id]
            self._owners.pop(worker_id, None)


__all__ = [
    "PROOF_LABEL", "CHALLENGE_HEADER", "NONCE_BYTES", "DEFAULT_GRACE", "IDENTITY_WINDOW",
    "MAX_CERTIFICATE_B64", "MAX_SIGNATURE_B64", "new_nonce", "signed_bytes", "b64_field",
    "verify_proof", "Admission", "Owner", "IdentityTable",
]
