"""The socket demultiplexer, the worker frame codec and the original system's datagrams."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messages.errors import DecodeError, FrameTooLarge, UnknownMessage, UsageError
from protocol.udp import (
    END_MARKER,
    FRAME_LAYOUTS,
    MAX_BENCH_PAYLOAD,
    MAX_CHAT_TEXT_BYTES,
    MAX_FRAME_SIZE,
    BenchData,
    BenchEnd,
    Chat,
    ChatAck,
    DatagramKind,
    FrameType,
    Keepalive,
    LegacyChat,
    LegacyPing,
    LegacyPunch,
    Ping,
    Pong,
    Punch,
    PunchAck,
    classify,
    decode_frame,
    decode_legacy,
    encode_frame,
    encode_legacy_chat,
    encode_legacy_ping,
    encode_legacy_punch,
)

TOKEN = bytes(range(16))
T = TOKEN.hex()
STUN_REQUEST = (Path(__file__).parent / "data" / "stun" / "turnutils_request.bin").read_bytes()
# Written exactly as the original worker sent it (seed 003: json.dumps of the dict, in this order).
SEED_CHAT = b'{"type": "chat_message", "from_worker_id": "Worker_A_ID", "content": "your message"}'
SEED_PUNCH = b"P2P_HOLE_PUNCH_PING_FROM_3f2b8c1e-9d4a-4f6b-8e2a-1c5d7e9f0a3b_NUM_2"

GOLDEN = [  # magic 0b, version 01, type, then the fields in FRAME_LAYOUTS order
    (Punch(TOKEN, "w-1", 7), f"0b0101 {T} 00000007 03 772d31"),
    (PunchAck(TOKEN, 7), f"0b0102 {T} 00000007"),
    (Keepalive(TOKEN), f"0b0103 {T}"),
    (Ping(5, TOKEN), f"0b0104 {T} 00000005"),
    (Pong(5, TOKEN), f"0b0105 {T} 00000005"),
    (Chat(TOKEN, 3, "héllo"), f"0b0106 {T} 00000003 0006 68c3a96c6c6f"),
    (BenchData(1, 2, b"abc"), "0b0107 00000001 00000002 616263"),
    (BenchEnd(1, 10, 1000), "0b0108 00000001 ffffffff 0000000a 00000000000003e8"),
    (ChatAck(TOKEN, 3), f"0b0109 {T} 00000003"),
]


def test_every_frame_type_has_a_golden_case() -> None:
    assert {type(frame) for frame, _ in GOLDEN} == {cls for cls, _ in FRAME_LAYOUTS.values()}
    assert len(FRAME_LAYOUTS) == len(FrameType)


@pytest.mark.parametrize(("frame", "golden"), GOLDEN, ids=lambda v: type(v).__name__)
def test_golden_bytes_both_ways(frame: object, golden: str) -> None:
    wire = bytes.fromhex(golden.replace(" ", ""))
    assert encode_frame(frame) == wire
    assert decode_frame(wire) == frame
    assert classify(wire) is DatagramKind.WORKER


def test_bench_end_keeps_the_original_end_marker_in_the_seq_slot() -> None:
    wire = encode_frame(BenchEnd(9, 1, 2))
    assert wire[7:11] == END_MARKER.to_bytes(4, "big") == b"\xff\xff\xff\xff"
    with pytest.raises(UsageError):
        encode_frame(BenchData(9, END_MARKER, b""))  # that seq is reserved for the end


@pytest.mark.parametrize(("wire", "error"), [
    (b"", DecodeError),
    (b"\x0b\x01", DecodeError),
    (b"\x0c\x01\x03" + TOKEN, DecodeError),  # wrong magic
    (b"\x0b\x02\x03" + TOKEN, DecodeError),  # a future version
    (b"\x0b\x01\x63" + TOKEN, UnknownMessage),
    (b"\x0b\x01\x03" + TOKEN[:15], DecodeError),  # truncated token
    (b"\x0b\x01\x03" + TOKEN + b"\x00", DecodeError),  # trailing byte
    (b"\x0b\x01\x07" + bytes(MAX_FRAME_SIZE), FrameTooLarge),
    (b"\x0b\x01\x01" + TOKEN + bytes(4) + b"\x03w!1", DecodeError),  # '!' not in a worker id
    (b"\x0b\x01\x01" + TOKEN + bytes(4) + b"\x00", DecodeError),  # empty worker id
    (b"\x0b\x01\x01" + TOKEN + bytes(4) + b"\x05w-1", DecodeError),  # id longer than the frame
    (b"\x0b\x01\x06" + TOKEN + bytes(4) + b"\x00\x02\xc3\x28", DecodeError),  # bad UTF-8
    (b"\x0b\x01\x07" + bytes(4) + b"\xff\xff\xff\xff", DecodeError),  # data in the end slot
    (b"\x0b\x01\x08" + bytes(4) + bytes(4) + bytes(12), DecodeError),  # end without marker
])
def test_malformed_frames_raise_decode_errors(wire: bytes, error: type[DecodeError]) -> None:
    with pytest.raises(error):
        decode_frame(wire)


def test_chat_text_is_bounded_on_both_sides() -> None:
    longest = Chat(TOKEN, 1, "é" * (MAX_CHAT_TEXT_BYTES // 2))
    assert decode_frame(encode_frame(longest)) == longest
    with pytest.raises(UsageError):
        encode_frame(Chat(TOKEN, 1, "x" * (MAX_CHAT_TEXT_BYTES + 1)))
    too_long = b"\x0b\x01\x06" + TOKEN + bytes(4) + b"\x04\xb1" + b"x" * 1201
    with pytest.raises(DecodeError):
        decode_frame(too_long)


def test_bench_payload_fills_the_datagram_and_no_more() -> None:
    assert len(encode_frame(BenchData(1, 1, bytes(MAX_BENCH_PAYLOAD)))) == MAX_FRAME_SIZE
    with pytest.raises(UsageError):
        encode_frame(BenchData(1, 1, bytes(MAX_BENCH_PAYLOAD + 1)))


@pytest.mark.parametrize("frame", [
    Keepalive(TOKEN[:8]), Punch(TOKEN, "", 1), Punch(TOKEN, "x" * 65, 1), PunchAck(TOKEN, -1),
    Ping(2**32, TOKEN), Chat(TOKEN, 1, "\ud800"), BenchData(1, 1, bytes(MAX_FRAME_SIZE)), "PING",
])
def test_encoding_an_invalid_frame_is_our_misuse(frame: object) -> None:
    with pytest.raises(UsageError):
        encode_frame(frame)  # type: ignore[arg-type]


@pytest.mark.parametrize(("datagram", "kind"), [
    (STUN_REQUEST, DatagramKind.STUN),
    (b"\x00\x01\x00\x00", DatagramKind.UNKNOWN),  # STUN range, but not a STUN message
    (b"\xc3" + bytes(1199), DatagramKind.QUIC),  # long header (RFC 9000 section 17.2)
    (b"\x41" + bytes(30), DatagramKind.QUIC),  # short header
    (b'{"not": "legacy"}', DatagramKind.QUIC),  # '{' without a string "type"
    (b"{\x99\x12binary", DatagramKind.QUIC),
    (b"P2P_HOLE_PUNCH_PING_FROM_x_NUM_", DatagramKind.QUIC),  # the prefix alone is not enough
    (SEED_CHAT, DatagramKind.LEGACY_JSON),
    (SEED_PUNCH, DatagramKind.LEGACY_TEXT),
    (b"", DatagramKind.UNKNOWN),
    (b"\x16\x03\x01", DatagramKind.UNKNOWN),  # DTLS: not on this socket
])
def test_classify_by_first_byte(datagram: bytes, kind: DatagramKind) -> None:
    assert classify(datagram) is kind


def test_seed_datagrams_decode() -> None:
    assert decode_legacy(SEED_CHAT) == LegacyChat("Worker_A_ID", "your message")
    assert decode_legacy(SEED_PUNCH) == LegacyPunch("3f2b8c1e-9d4a-4f6b-8e2a-1c5d7e9f0a3b", 2)
    assert encode_legacy_chat("Worker_A_ID", "your message") == SEED_CHAT
    assert encode_legacy_punch("w_1", 3) == b"P2P_HOLE_PUNCH_PING_FROM_w_1_NUM_3"


def test_legacy_pings_both_ways() -> None:
    request = b'{"type": "p2p_ping_request", "from_worker_id": "a", "timestamp": 12.5}'
    assert decode_legacy(request) == LegacyPing(False, "a", 12.5)
    assert decode_legacy(b'{"type": "p2p_ping_response"}') == LegacyPing(True)
    response = encode_legacy_ping(LegacyPing(True, "b", 1.0))
    assert classify(response) is DatagramKind.LEGACY_JSON
    assert decode_legacy(response) == LegacyPing(True, "b", 1.0)


@pytest.mark.parametrize(("datagram", "error"), [
    (b'{"type": "who_knows"}', UnknownMessage),
    (b'{"type": "chat_message", "from_worker_id": "a"}', DecodeError),  # no content
    (b'{"type": "chat_message", "from_worker_id": 7, "content": "x"}', DecodeError),
    (b'{"type": "p2p_ping_request", "timestamp": "soon"}', DecodeError),
    (b'{"type": "p2p_ping_request", "timestamp": NaN}', DecodeError),
    (b'{"type": "p2p_ping_request", "timestamp": 1e999}', DecodeError),
    (b'{"type": "p2p_ping_request", "timestamp": 1' + b"0" * 400 + b"}", DecodeError),
    (b'{"type": "x", "deep": ' + b"[" * 5000 + b"]" * 5000 + b"}", DecodeError),
    (b'{"type": "chat_message", "content": "' + b"x" * 9000 + b'"}', FrameTooLarge),
    (b"hello", DecodeError),
])
def test_malformed_legacy_datagrams(datagram: bytes, error: type[DecodeError]) -> None:
    with pytest.raises(error):
        decode_legacy(datagram)


def mutations(wire: bytes) -> st.SearchStrategy[bytes]:
    """A valid frame with one byte changed, cut short or extended: the inputs that go deep."""
    return st.one_of(
        st.integers(0, len(wire) - 1).flatmap(
            lambda i: st.integers(0, 255).map(lambda b: wire[:i] + bytes([b]) + wire[i + 1:])),
        st.integers(0, len(wire)).map(lambda n: wire[:n]),
        st.binary(max_size=8).map(lambda tail: wire + tail),
    )


HOSTILE = (st.binary(max_size=1500)
           | st.binary(max_size=64).map(lambda b: b"\x0b\x01" + b)
           | st.sampled_from([encode_frame(frame) for frame, _ in GOLDEN]).flatmap(mutations))


@settings(max_examples=600, deadline=None)
@given(HOSTILE)
def test_decode_frame_returns_a_frame_or_raises_decode_error(data: bytes) -> None:
    try:
        frame = decode_frame(data)
    except DecodeError:
        return
    assert encode_frame(frame) == data  # whatever decodes is canonical: it re-encodes the same


LEGACY_HOSTILE = (st.binary(max_size=200)
                  | st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=8),
                                 lambda kids: st.lists(kids, max_size=3)
                                 | st.dictionaries(st.text(max_size=8), kids, max_size=3),
                                 max_leaves=8)
                  .map(lambda v: json.dumps({"type": "chat_message", "content": v},
                                            allow_nan=True).encode())
                  | st.text(max_size=80).map(lambda s: ("P2P_HOLE_PUNCH_PING_FROM_" + s).encode())
                  | st.one_of(st.integers(), st.floats(), st.text(max_size=8)).map(
                      lambda v: json.dumps({"type": "p2p_ping_request", "timestamp": v}).encode()))


@settings(max_examples=400, deadline=None)
@given(LEGACY_HOSTILE | HOSTILE)
def test_classify_never_raises_and_legacy_decodes_or_raises_decode_error(data: bytes) -> None:
    kind = classify(data)
    try:
        decoded = decode_legacy(data)
    except DecodeError:
        assert kind is not DatagramKind.LEGACY_TEXT  # what classify calls legacy text decodes
        return
    assert isinstance(decoded, LegacyChat | LegacyPing | LegacyPunch)
    assert kind in (DatagramKind.LEGACY_JSON, DatagramKind.LEGACY_TEXT)
