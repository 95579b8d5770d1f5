"""The rendezvous WebSocket JSON protocol: the original's frames, every bad input, the builders."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messages.errors import DecodeError, FrameTooLarge, UnknownMessage
from protocol.rendezvous import wire
from protocol.rendezvous.wire import (
    ConnectRequest,
    EchoRequest,
    ExplicitDeregister,
    RegisterPublicIp,
    UpdateUdpEndpoint,
    parse_client_message,
)

FINGERPRINT = "ab" * 32


# Frames exactly as the original worker (seeds/003) sent them.
@pytest.mark.parametrize(("frame", "expected"), [
    ('{"type": "register_public_ip", "ip": "203.0.113.7"}', RegisterPublicIp("203.0.113.7")),
    ('{"type": "update_udp_endpoint", "udp_ip": "198.51.100.2", "udp_port": 40001}',
     UpdateUdpEndpoint("198.51.100.2", 40001)),
    ('{"type": "explicit_deregister"}', ExplicitDeregister()),
    ('{"type": "echo_request", "payload": "keepalive"}', EchoRequest("keepalive")),
])
def test_original_frames_parse(frame: str, expected: object) -> None:
    assert parse_client_message(frame) == expected
    assert parse_client_message(frame.encode()) == expected


def test_new_messages_and_fields_parse() -> None:
    assert parse_client_message('{"type":"connect_request","peer_worker_id":"w-2"}') == (
        ConnectRequest("w-2"))
    update = {"type": "update_udp_endpoint", "udp_ip": "2001:DB8::1", "udp_port": 1,
              "cert_fingerprint": FINGERPRINT.upper(), "future_field": [1]}
    assert parse_client_message(json.dumps(update)) == (
        UpdateUdpEndpoint("2001:db8::1", 1, FINGERPRINT))
    register = '{"type":"register_public_ip","ip":"10.0.0.1","cert_fingerprint":null}'
    assert parse_client_message(register) == RegisterPublicIp("10.0.0.1", None)
    nested = '{"type":"echo_request","payload":{"a":[1,2.5,null,true]}}'
    assert parse_client_message(nested) == EchoRequest({"a": [1, 2.5, None, True]})
    assert parse_client_message('{"type":"echo_request"}') == EchoRequest("")  # the original's


def _endpoint(**fields: object) -> str:
    return json.dumps({"type": "update_udp_endpoint", "udp_ip": "192.0.2.1", "udp_port": 9}
                      | fields)


@pytest.mark.parametrize(("frame", "error", "says"), [
    ("not json", DecodeError, "not valid JSON"),
    (b"\xff\xfe{}", DecodeError, "not UTF-8"),
    ("[1, 2]", DecodeError, "must be a JSON object"),
    ('{"ip": "1.2.3.4"}', DecodeError, "'type' is missing"),
    ('{"type": 7}', DecodeError, "'type' is missing or not a string"),
    ('{"type": "p2p_connection_offer"}', UnknownMessage, "unknown message type"),
    ('{"type": "register_public_ip"}', DecodeError, "field 'ip' is missing"),
    ('{"type": "register_public_ip", "ip": 17}', DecodeError, "field 'ip' must be"),
    ('{"type": "register_public_ip", "ip": "1.2.3"}', DecodeError, "'ip' is not an IP"),
    (_endpoint(udp_ip="0.0.0.0"), DecodeError, "not an address a peer can send to"),
    (_endpoint(udp_ip="224.0.0.1"), DecodeError, "not an address a peer can send to"),
    ('{"type": "update_udp_endpoint", "udp_ip": "1.2.3.4"}', DecodeError, "'udp_port' is missing"),
    (_endpoint(udp_port="9"), DecodeError, "'udp_port' must be an integer"),
    (_endpoint(udp_port=9.0), DecodeError, "'udp_port' must be an integer"),
    (_endpoint(udp_port=True), DecodeError, "'udp_port' must be an integer"),
    (_endpoint(udp_port=0), DecodeError, "within 1..65535"),
    (_endpoint(udp_port=65536), DecodeError, "within 1..65535"),
    (_endpoint(cert_fingerprint="ab" * 31), DecodeError, "'cert_fingerprint' must be a SHA-256"),
    (_endpoint(cert_fingerprint="zz" * 32), DecodeError, "'cert_fingerprint' must be a SHA-256"),
    ('{"type": "connect_request"}', DecodeError, "'peer_worker_id' is missing"),
    ('{"type": "connect_request", "peer_worker_id": "a b"}', DecodeError, "'peer_worker_id'"),
    ('{"type": "echo_request", "payload": NaN}', DecodeError, "not valid JSON"),
    ('{"type": "echo_request", "payload": 1e999}', DecodeError, "too large for JSON"),
    ('{"type": "echo_request", "payload": ' + "[" * 17 + "]" * 17 + "}", DecodeError, "deeper"),
    ('{"type": "echo_request", "payload": "' + "x" * 2047 + '"}', FrameTooLarge, "payload"),
    ("[" * 4000 + "]" * 4000, DecodeError, "not valid JSON"),  # RecursionError inside json
    ('{"type": "echo_request", "payload": ' + "1" * 5000 + "}", DecodeError, "not valid JSON"),
    (" " * 8193, FrameTooLarge, "over the 8192-byte limit"),
], ids=lambda value: repr(value)[:30] if isinstance(value, (str, bytes)) else None)
def test_bad_frames_raise_an_actionable_error(
    frame: str | bytes, error: type[DecodeError], says: str,
) -> None:
    with pytest.raises(error) as raised:
        parse_client_message(frame)
    assert type(raised.value) is error
    assert says in raised.value.reason


def test_frame_limit_counts_utf8_bytes() -> None:
    payload = "é" * ((wire.MAX_ECHO_PAYLOAD_BYTES - 2) // 2)  # 2 bytes each in UTF-8
    frame = json.dumps({"type": "echo_request", "payload": payload}, ensure_ascii=False)
    assert parse_client_message(frame) == EchoRequest(payload)
    padded = frame[:-1] + " " * (wire.MAX_TEXT_FRAME_BYTES - len(frame.encode())) + "}"
    assert len(padded.encode()) == wire.MAX_TEXT_FRAME_BYTES
    assert parse_client_message(padded) == EchoRequest(payload)
    with pytest.raises(FrameTooLarge):
        parse_client_message(padded + " ")


@pytest.mark.parametrize("worker_id", ["a", "W_1-x", "z" * 64])
def test_valid_worker_ids(worker_id: str) -> None:
    assert wire.validate_worker_id(worker_id) == worker_id


@pytest.mark.parametrize("worker_id", ["", "z" * 65, "a/b", "a b", "é", "a\n", None, 5])
def test_invalid_worker_ids(worker_id: object) -> None:
    with pytest.raises(DecodeError, match="worker id must be 1-64 characters"):
        wire.validate_worker_id(worker_id)


def test_outbound_golden_text() -> None:
    offer = wire.p2p_connection_offer(
        "w-b", "198.51.100.2", 40001, quic_role="client", peer_cert_fingerprint=None,
        punch_token="00" * 16,
    )
    assert wire.encode(offer) == (
        '{"type":"p2p_connection_offer","peer_worker_id":"w-b","peer_udp_ip":"198.51.100.2",'
        '"peer_udp_port":40001,"quic_role":"client","peer_cert_fingerprint":null,'
        '"punch_token":"00000000000000000000000000000000"}'
    )
    assert wire.encode(wire.udp_endpoint_ack("198.51.100.2", 40001)) == (
        '{"type":"udp_endpoint_ack","status":"success","udp_ip":"198.51.100.2","udp_port":40001}')
    assert wire.encode(wire.udp_endpoint_refused("bad port")) == (
        '{"type":"udp_endpoint_ack","status":"error","detail":"bad port"}')
    assert wire.encode(wire.peer_disconnected("w-a", "disconnected")) == (
        '{"type":"peer_disconnected","peer_worker_id":"w-a","reason":"disconnected"}')
    assert wire.encode(wire.error("no such peer", "peer_unavailable")) == (
        '{"type":"error","message":"no such peer","code":"peer_unavailable"}')


def test_echo_response_carries_the_payload_under_both_names() -> None:
    response = wire.echo_response({"n": [1]}, "w-a")
    assert response["type"] == "echo_response"
    assert response["payload"] == response["original_payload"] == {"n": [1]}
    assert "w-a" in response["processed_by_rendezvous"]


def test_largest_echo_response_fits_in_a_frame() -> None:
    payload = "x" * (wire.MAX_ECHO_PAYLOAD_BYTES - 2)
    request = parse_client_message(json.dumps({"type": "echo_request", "payload": payload}))
    assert isinstance(request, EchoRequest)
    response = wire.encode(wire.echo_response(request.payload, "w" * 64))
    assert len(response.encode()) <= wire.MAX_TEXT_FRAME_BYTES


def _decodes_or_refuses(frame: str | bytes) -> None:
    try:
        message = parse_client_message(frame)
    except DecodeError:
        return
    assert type(message) in wire.CLIENT_MESSAGES.values()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | st.binary(max_size=300))
def test_arbitrary_text_gives_a_message_or_decode_error(frame: str | bytes) -> None:
    _decodes_or_refuses(frame)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(wire.CLIENT_MESSAGES)),
       st.dictionaries(st.sampled_from(["ip", "udp_ip", "udp_port", "payload", "peer_worker_id",
                                        "cert_fingerprint"]), json_values))
def test_arbitrary_fields_give_a_message_or_decode_error(kind: str, fields: dict) -> None:
    _decodes_or_refuses(json.dumps(fields | {"type": kind}))
