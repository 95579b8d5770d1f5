"""protocol.certs: self-signed identities, fingerprints, challenge signatures."""

from __future__ import annotations

import datetime
import hashlib
import logging
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from messages.errors import AuthError, ConfigError, DecodeError
from protocol import certs


@pytest.fixture(scope="module")
def identity() -> tuple[bytes, bytes]:
    return certs.generate_self_signed("worker-a")


@pytest.fixture(scope="module")
def other() -> tuple[bytes, bytes]:
    return certs.generate_self_signed("worker-b")


def ed25519_identity() -> tuple[bytes, bytes]:
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ed")])
    start = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=1))
        .sign(key, None)
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def test_generated_certificate_is_p256_self_signed_with_common_name(identity):
    cert = x509.load_pem_x509_certificate(identity[0])
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "worker-a"
    assert cert.signature_hash_algorithm.name == hashes.SHA256().name
    assert identity[1].startswith(b"-----BEGIN PRIVATE KEY-----")


def test_fingerprint_is_sha256_of_der_whatever_the_encoding(identity):
    der = x509.load_pem_x509_certificate(identity[0]).public_bytes(serialization.Encoding.DER)
    expected = hashlib.sha256(der).hexdigest()
    assert certs.fingerprint(identity[0]) == expected
    assert certs.fingerprint(identity[0].decode()) == expected
    assert certs.fingerprint(der) == expected
    assert len(expected) == 64 and expected == expected.lower()


def test_two_identities_have_different_fingerprints(identity, other):
    assert certs.fingerprint(identity[0]) != certs.fingerprint(other[0])


def test_load_or_create_generates_once_then_loads(tmp_path):
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    created = certs.load_or_create(cert_path, key_path, common_name="w1")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    loaded = certs.load_or_create(cert_path, key_path)
    assert loaded == created
    assert cert_path.read_bytes() == created[0]


def test_load_or_create_never_logs_key_material(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    _, key_pem = certs.load_or_create(tmp_path / "cert.pem", tmp_path / "key.pem")
    certs.load_or_create(tmp_path / "cert.pem", tmp_path / "key.pem")
    key_body = b"".join(key_pem.splitlines()[1:-1]).decode()
    assert "fingerprint" in caplog.text
    assert "PRIVATE" not in caplog.text and key_body[:40] not in caplog.text


def test_load_or_create_refuses_a_lone_file(tmp_path, identity):
    (tmp_path / "cert.pem").write_bytes(identity[0])
    with pytest.raises(ConfigError, match="only one of"):
        certs.load_or_create(tmp_path / "cert.pem", tmp_path / "key.pem")


def test_load_or_create_refuses_a_key_of_another_certificate(tmp_path, identity, other):
    (tmp_path / "cert.pem").write_bytes(identity[0])
    (tmp_path / "key.pem").write_bytes(other[1])
    with pytest.raises(ConfigError, match="does not belong"):
        certs.load_or_create(tmp_path / "cert.pem", tmp_path / "key.pem")


def test_load_or_create_refuses_garbage(tmp_path):
    (tmp_path / "cert.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nnope\n")
    (tmp_path / "key.pem").write_bytes(b"nope")
    with pytest.raises(ConfigError, match="unusable"):
        certs.load_or_create(tmp_path / "cert.pem", tmp_path / "key.pem")


def test_signature_round_trip(identity):
    signature = certs.sign_challenge(identity[1], b"challenge")
    certs.verify_challenge(identity[0], b"challenge", signature)


def test_signature_over_other_bytes_is_refused(identity):
    signature = certs.sign_challenge(identity[1], b"challenge")
    with pytest.raises(AuthError, match="does not match"):
        certs.verify_challenge(identity[0], b"challengE", signature)


def test_signature_by_another_key_is_refused(identity, other):
    signature = certs.sign_challenge(other[1], b"challenge")
    with pytest.raises(AuthError, match="does not match"):
        certs.verify_challenge(identity[0], b"challenge", signature)


def test_ed25519_keys_sign_and_verify_too():
    cert_pem, key_pem = ed25519_identity()
    signature = certs.sign_challenge(key_pem, b"x")
    certs.verify_challenge(cert_pem, b"x", signature)
    with pytest.raises(AuthError):
        certs.verify_challenge(cert_pem, b"y", signature)


def test_unreadable_peer_certificate_is_an_auth_error():
    with pytest.raises(AuthError, match="unusable peer certificate"):
        certs.verify_challenge(b"\x30\x03\x02\x01\x00", b"x", b"sig")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600) | st.binary(max_size=200).map(lambda b: b"-----BEGIN" + b))
def test_load_certificate_takes_hostile_bytes(data):
    try:
        assert isinstance(certs.load_certificate(data), x509.Certificate)
    except DecodeError:
        pass


@settings(max_examples=100, deadline=None)
@given(signature=st.binary(max_size=300), message=st.binary(max_size=100))
def test_hostile_signature_is_only_ever_an_auth_error(identity, signature, message):
    with pytest.raises(AuthError):
        certs.verify_challenge(identity[0], message, signature)
