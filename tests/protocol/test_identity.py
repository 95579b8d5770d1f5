"""Worker id ownership (``IdentityTable``) and the identity proof, without sockets."""

from __future__ import annotations

import base64

import pytest

from messages.errors import AuthError, DecodeError
from protocol.certs import fingerprint, generate_self_signed
from protocol.rendezvous import wire
from protocol.rendezvous.client_wire import identity_proof
from protocol.rendezvous.identity import Admission, IdentityTable, new_nonce, verify_proof

VICTIM, STRANGER = "a" * 64, "b" * 64


def test_the_first_proven_key_owns_the_id_and_another_is_refused() -> None:
    table = IdentityTable()
    assert table.on_connect("w1", 0.0) is Admission.ADMIT  # free: unproven may take it
    assert table.on_proof("w1", VICTIM, 0.0) is Admission.ADMIT
    assert table.on_connect("w1", 1.0) is Admission.WAIT
    assert table.on_proof("w1", STRANGER, 1.0) is Admission.REFUSE
    assert table.on_unproven_frame("w1", 1.0) is Admission.REFUSE
    assert table.on_proof("w1", VICTIM, 1.0) is Admission.ADMIT  # the same key replaces
    assert table.owner("w1", 1.0) == VICTIM


def test_an_id_is_released_grace_seconds_after_its_connection_closed() -> None:
    table = IdentityTable(grace=60.0)
    table.on_proof("w1", VICTIM, 0.0)
    table.disconnected("w1", VICTIM, 10.0)
    assert table.on_proof("w1", STRANGER, 69.9) is Admission.REFUSE
    assert table.on_proof("w1", VICTIM, 69.9) is Admission.ADMIT  # back in time: live again
    table.disconnected("w1", VICTIM, 100.0)
    assert table.owner("w1", 160.0) is None and len(table) == 0
    assert table.on_proof("w1", STRANGER, 160.0) is Admission.ADMIT


def test_deregister_releases_at_once() -> None:
    table = IdentityTable()
    table.on_proof("w1", VICTIM, 0.0)
    table.release("w1")
    assert table.on_connect("w1", 0.0) is Admission.ADMIT


def test_without_unproven_ids_every_connection_waits_for_a_proof() -> None:
    table = IdentityTable(allow_unproven=False)
    assert table.on_connect("w1", 0.0) is Admission.WAIT
    assert table.on_unproven_frame("w1", 0.0) is Admission.REFUSE
    assert table.on_proof("w1", VICTIM, 0.0) is Admission.ADMIT


def test_a_proof_binds_the_key_to_this_nonce_and_this_id() -> None:
    cert, key = generate_self_signed("w")
    nonce = new_nonce()
    message = wire.parse_client_message(wire.encode(identity_proof("w1", nonce, cert, key)))
    assert isinstance(message, wire.IdentityProof)
    assert verify_proof(message.certificate, message.signature, nonce, "w1") == fingerprint(cert)
    with pytest.raises(AuthError):
        verify_proof(message.certificate, message.signature, new_nonce(), "w1")
    with pytest.raises(AuthError):
        verify_proof(message.certificate, message.signature, nonce, "w2")
    other, _ = generate_self_signed("x")
    with pytest.raises(AuthError):
        verify_proof(other, message.signature, nonce, "w1")


@pytest.mark.parametrize("fields", [{}, {"certificate": "!!", "signature": "AA=="},
                                    {"certificate": "A" * 5000, "signature": "AA=="}])
def test_a_malformed_proof_is_a_decode_error(fields: dict[str, str]) -> None:
    with pytest.raises(DecodeError):
        wire.parse_client_message(wire.encode({"type": "identity_proof", **fields}))


def test_a_lone_surrogate_is_refused_inbound_and_escaped_outbound() -> None:
    with pytest.raises(DecodeError, match="surrogate"):
        wire.parse_client_message('{"type":"echo_request","payload":"\\ud800"}')
    text = wire.encode({"payload": "\ud800é"})
    assert text.isascii() and text.encode("utf-8")
    assert base64.b64encode(text.encode())  # any str the service sends is encodable
