"""The STUN codec and the responder's logic: golden bytes, hostile bytes, RFC rules.

Golden files in tests/data/stun/: captured once from coturn 4.6.1, stund 0.97, pystun3 2.0.0 and
turnutils_stunclient on loopback; rfc5769_*.bin are the RFC 5769 §2.2/§2.3 test vectors (their
FINGERPRINTs, c07d4c96 and c8fb0b4c, are the RFC's).
"""

from __future__ import annotations

import pathlib
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messages.errors import DecodeError, FrameTooLarge, UsageError
from protocol.stun import (
    BINDING,
    MAX_MESSAGE_SIZE,
    StunClass,
    StunMessage,
    binding_response,
    is_stun,
    parse_message,
    serialize_message,
)

DATA = pathlib.Path(__file__).parent / "data" / "stun"
RFC5769_TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")
CLIENT = ("127.0.0.1", 40001)


def golden(name: str) -> bytes:
    return (DATA / name).read_bytes()


def answer_to(request: bytes) -> StunMessage:
    answer = binding_response(request, CLIENT)
    assert answer is not None
    return parse_message(answer)


@pytest.mark.parametrize("name", [
    "turnutils_request.bin", "pystun3_change_request.bin", "coturn_success_v4.bin",
    "coturn_error_420.bin", "coturn_classic_response.bin", "stund_classic_response.bin",
    "responder_success_v4.bin", "responder_success_v6.bin", "responder_classic.bin",
])
def test_golden_messages_round_trip(name: str) -> None:
    data = golden(name)
    assert serialize_message(parse_message(data)) == data


@pytest.mark.parametrize("request_name, source, answer_name", [
    ("turnutils_request.bin", CLIENT, "responder_success_v4.bin"),
    ("turnutils_request.bin", ("2001:db8::1", 40001), "responder_success_v6.bin"),
    ("pystun3_change_request.bin", CLIENT, "responder_classic.bin"),
])
def test_responder_answers_are_byte_exact(request_name: str, source: tuple[str, int],
                                          answer_name: str) -> None:
    assert binding_response(golden(request_name), source) == golden(answer_name)


def test_coturn_success_carries_xor_and_plain_mapped_address() -> None:
    message = parse_message(golden("coturn_success_v4.bin"))
    assert (message.method, message.message_class, message.magic_cookie) == (
        BINDING, StunClass.SUCCESS, True)
    assert message.attribute("XOR-MAPPED-ADDRESS") == ("127.0.0.1", 40001)
    assert message.attribute("MAPPED-ADDRESS") == ("127.0.0.1", 40001)
    assert message.attribute("RESPONSE-ORIGIN") == ("127.0.0.1", 34780)
    assert message.attribute("SOFTWARE") == "Coturn-4.6.1 'Gorst'"


def test_rfc5769_vectors_decode_with_their_fingerprint() -> None:
    v4, v6 = parse_message(golden("rfc5769_response_v4.bin")), parse_message(
        golden("rfc5769_response_v6.bin"))
    assert v4.transaction_id == v6.transaction_id == RFC5769_TID
    assert v4.attribute("XOR-MAPPED-ADDRESS") == ("192.0.2.1", 32853)
    assert v6.attribute("XOR-MAPPED-ADDRESS") == ("2001:db8:1234:5678:11:2233:4455:6677", 32853)
    assert (v4.attribute("FINGERPRINT"), v6.attribute("FINGERPRINT")) == (0xC07D4C96, 0xC8FB0B4C)
    assert v4.attribute("SOFTWARE") == "test vector"  # the padding byte 0x20 is ignored
    assert len(v4.attribute("0x0008")) == 20  # MESSAGE-INTEGRITY kept raw


def test_classic_messages_keep_the_whole_128_bit_id() -> None:
    request = parse_message(golden("pystun3_change_request.bin"))
    assert (request.magic_cookie, len(request.transaction_id)) == (False, 16)
    assert request.attribute("CHANGE-REQUEST") == 6
    stund = parse_message(golden("stund_classic_response.bin"))
    assert stund.attribute("MAPPED-ADDRESS") == ("127.0.0.1", 40004)
    assert stund.attribute("CHANGED-ADDRESS") == ("127.0.0.2", 34791)
    # stund xors with the first bytes of its 128-bit id, as the codec does for classic messages
    assert stund.attribute("XOR-MAPPED-ADDRESS") == ("127.0.0.1", 40004)


def test_error_code_and_unknown_attributes() -> None:
    refusal = parse_message(golden("coturn_error_420.bin"))
    assert refusal.message_class is StunClass.ERROR
    assert refusal.attribute("ERROR-CODE")[0] == 420


def test_responder_answers_rfc5389_request_with_both_addresses() -> None:
    answer = answer_to(golden("turnutils_request.bin"))
    request = parse_message(golden("turnutils_request.bin"))
    assert answer.transaction_id == request.transaction_id
    assert [name for name, _ in answer.attributes] == [
        "XOR-MAPPED-ADDRESS", "MAPPED-ADDRESS", "SOFTWARE", "FINGERPRINT"]
    assert answer.attribute("XOR-MAPPED-ADDRESS") == answer.attribute("MAPPED-ADDRESS") == CLIENT


def test_responder_answers_classic_request_with_mapped_address_only() -> None:
    classic = StunMessage(BINDING, StunClass.REQUEST, bytes(range(16)), magic_cookie=False)
    answer = answer_to(serialize_message(classic))
    assert answer.magic_cookie is False
    assert answer.transaction_id == bytes(range(16))
    assert answer.attributes == (("MAPPED-ADDRESS", CLIENT),)


def test_responder_refuses_change_request_and_unknown_required_attributes() -> None:
    request = StunMessage(BINDING, StunClass.REQUEST, RFC5769_TID,
                          (("CHANGE-REQUEST", 6), ("0x0777", b"x"), ("0x8777", b"optional")))
    answer = answer_to(serialize_message(request))
    assert answer.message_class is StunClass.ERROR
    assert answer.attribute("ERROR-CODE") == (420, "Unknown Attribute")
    assert answer.attribute("UNKNOWN-ATTRIBUTES") == (0x0777, 0x0003)


def test_responder_answers_an_unflagged_change_request() -> None:
    request = StunMessage(BINDING, StunClass.REQUEST, RFC5769_TID, (("CHANGE-REQUEST", 0),))
    answer = answer_to(serialize_message(request))
    assert answer.message_class is StunClass.SUCCESS


@pytest.mark.parametrize("message", [
    StunMessage(BINDING, StunClass.INDICATION, RFC5769_TID),
    StunMessage(BINDING, StunClass.SUCCESS, RFC5769_TID),
    StunMessage(0x003, StunClass.REQUEST, RFC5769_TID),  # a TURN Allocate
])
def test_responder_ignores_what_is_not_a_binding_request(message: StunMessage) -> None:
    assert binding_response(serialize_message(message), CLIENT) is None


def with_length(body: bytes, cookie: bytes = b"\x21\x12\xa4\x42") -> bytes:
    return b"\x00\x01" + struct.pack("!H", len(body)) + cookie + RFC5769_TID + body


@pytest.mark.parametrize("data, words", [
    (b"", "not a STUN message"),
    (b"\x40" + with_length(b"")[1:], "not a STUN message"),  # RFC 7983: first byte > 3
    (with_length(b"")[:19], "not a STUN message"),
    (with_length(b"\x00\x01\x00\x08\x00\x01"), "not a STUN message"),  # length not x4
    (with_length(b"\x00\x01\x00\x08\x00\x01\x00\x00"), "runs past"),
    (with_length(b"\x00\x01\x00\x08\x00\x03\x00\x00\x7f\x00\x00\x01"), "family"),
    (with_length(b"\x00\x20\x00\x0c\x00\x02\x00\x00" + bytes(8)), "family 2 is 12 bytes"),
    (with_length(b"\x00\x09\x00\x04\x00\x00\x07\x00"), "ERROR-CODE"),
    (with_length(b"\x80\x22\x00\x02\xff\xfe\x00\x00"), "UTF-8"),
    (with_length(b"\x80\x28\x00\x04\x00\x00\x00\x00"), "FINGERPRINT does not match"),
    (with_length(b"\x00\x0a\x00\x03\x00\x01\x00\x00"), "odd length"),
])
def test_malformed_messages_raise_decode_error(data: bytes, words: str) -> None:
    with pytest.raises(DecodeError, match=words):
        parse_message(data)


def test_attribute_after_fingerprint_is_refused() -> None:
    message = serialize_message(StunMessage(BINDING, StunClass.REQUEST, RFC5769_TID,
                                            (("FINGERPRINT", 0),)))
    tampered = bytearray(message + b"\x80\x22\x00\x00")
    tampered[3] += 4
    tampered[24:28] = (zlib.crc32(tampered[:20]) ^ 0x5354554E).to_bytes(4, "big")  # still valid
    with pytest.raises(DecodeError, match="after FINGERPRINT"):
        parse_message(bytes(tampered))


def test_fingerprint_is_crc32_xor_stun() -> None:
    message = serialize_message(StunMessage(BINDING, StunClass.REQUEST, RFC5769_TID,
                                            (("FINGERPRINT", 0),)))
    assert int.from_bytes(message[-4:], "big") == zlib.crc32(message[:-8]) ^ 0x5354554E


def test_size_limits() -> None:
    with pytest.raises(FrameTooLarge):
        parse_message(with_length(bytes(MAX_MESSAGE_SIZE)))
    with pytest.raises(FrameTooLarge):
        parse_message(with_length(b"\x80\x22\x03\x00" + b"a" * 768))


def test_our_misuse_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        StunMessage(BINDING, StunClass.REQUEST, bytes(16))  # a cookie message has a 96-bit id
    with pytest.raises(UsageError):
        serialize_message(StunMessage(BINDING, StunClass.REQUEST, RFC5769_TID, (("BOGUS", 1),)))


def test_is_stun_tells_stun_from_quic_and_worker_frames() -> None:
    assert is_stun(golden("turnutils_request.bin"))
    assert is_stun(golden("stund_classic_response.bin"))
    assert not is_stun(b"\xc3" + bytes(1199))  # a QUIC long header (RFC 9443)
    assert not is_stun(b'{"type": "chat_message", "text": "hello there"}')


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + bytes(-len(value) % 4)


KNOWN_TYPES = [0x0001, 0x0003, 0x0004, 0x0005, 0x0009, 0x000A, 0x0020, 0x8022, 0x8028, 0x802B]
HOSTILE = (
    st.binary(max_size=120)
    | st.builds(with_length, st.binary(max_size=100))
    | st.lists(st.tuples(st.sampled_from(KNOWN_TYPES) | st.integers(0, 0xFFFF),
                         st.binary(max_size=24)), max_size=5).map(
        lambda pairs: with_length(b"".join(tlv(*pair) for pair in pairs)))
)


@settings(max_examples=400, deadline=None)
@given(HOSTILE)
def test_hostile_bytes_give_a_message_or_decode_error(data: bytes) -> None:
    try:
        message = parse_message(data)
    except DecodeError:
        return
    assert isinstance(message, StunMessage)


@settings(max_examples=400, deadline=None)
@given(HOSTILE)
def test_hostile_bytes_give_the_responder_an_answer_none_or_decode_error(data: bytes) -> None:
    try:
        answer = binding_response(data, CLIENT)
    except DecodeError:
        return
    assert answer is None or parse_message(answer).message_class in (
        StunClass.SUCCESS, StunClass.ERROR)
