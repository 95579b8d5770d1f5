"""The message codec: golden bytes, round trips, and hostile input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messages.codec import MAX_FRAME_BYTES, encode, encode_envelope, message, unpack_batch
from messages.errors import DecodeError, FrameTooLarge, UnknownMessage, UsageError
from messages.runtime import Fault, Probe, Reply, TreeEvent
from messages.tags import Tag

STAMP = b"\x00\x00\x00\x2a\x00\x00\x00\x07"  # a sending socket's id 42, its 7th datagram
GOLDEN = [
    (Probe("a", 1, b"x"), STAMP + b"\x91\x922\x93\xa1a\x01\xc4\x01x"),
    (Fault("crash"), STAMP + b"\x91\x92\x02\x91\xa5crash"),
    (TreeEvent("started", "w/udp", 7, "", 1.5), STAMP
     + b"\x91\x92\x0e\x95\xa7started\xa5w/udp\x07\xa0\xcb?\xf8\x00\x00\x00\x00\x00\x00"),
]


def packb(obj: object) -> bytes:
    """A datagram of hand-made msgpack, stamped."""
    return STAMP + msgpack.packb(obj, use_bin_type=True)


@pytest.mark.parametrize(("msg", "wire"), GOLDEN)
def test_golden_bytes(msg: object, wire: bytes) -> None:
    assert encode(msg, stamp=42 << 32 | 7) == wire
    assert unpack_batch(wire)[0].msg == msg


def test_ask_envelope_round_trip() -> None:
    env = unpack_batch(encode(Reply(True, {"a": [1, 2]}), 5, "/run/r-1.sock"))[0]
    assert env == (Reply(True, {"a": [1, 2]}), 5, "/run/r-1.sock", 0.0)


def test_an_asks_deadline_travels_with_it() -> None:
    item = encode_envelope(Probe("a", 1), 5, "@r", deadline=123.5)
    env = unpack_batch(packb([item]))[0]
    assert (env.corr, env.reply_to, env.deadline) == (5, "@r", 123.5)


def test_a_datagram_shorter_than_its_stamp_is_refused() -> None:
    with pytest.raises(DecodeError, match="shorter than its stamp"):
        unpack_batch(b"\x91\x90")


@pytest.mark.parametrize(("fields", "error"), [
    ([[Tag.PROBE, ["a", "1", b""]]], "Probe.seq"),
    ([[Tag.PROBE, ["a", 1]]], "takes 3 fields"),
    ([[Tag.PROBE, [None, 1, b""]]], "Probe.sender"),
    ([[Tag.FAULT, [True]]], "Fault.kind"),
    ([[Tag.PROBE]], "an envelope is"),
    ({"a": 1}, "a batch is a msgpack array"),
])
def test_mistyped_fields_are_refused(fields: object, error: str) -> None:
    with pytest.raises(DecodeError, match=error):
        unpack_batch(packb(fields))


def test_unknown_tag() -> None:
    with pytest.raises(UnknownMessage):
        unpack_batch(packb([[9999, []]]))


def test_oversized_frame() -> None:
    with pytest.raises(FrameTooLarge):
        unpack_batch(STAMP + b"\x91" + b"\x00" * MAX_FRAME_BYTES)


def test_declaring_a_taken_tag_is_an_error() -> None:
    with pytest.raises(UsageError, match="taken"):
        @message(Tag.PROBE)
        @dataclass(frozen=True)
        class Again:
            x: int


def test_a_mutable_class_cannot_be_a_message() -> None:
    with pytest.raises(UsageError, match="frozen"):
        message(9998)(dataclass(type("Loose", (), {"__annotations__": {"x": int}})))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=256))
def test_arbitrary_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    try:
        envelopes = unpack_batch(data)
    except DecodeError:
        return
    assert all(hasattr(type(e.msg), "TAG") for e in envelopes)


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.text(max_size=8)
    | st.binary(max_size=8) | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([int(t) for t in Tag]) | st.integers(-2**63, 2**64 - 1),
       st.lists(_values, max_size=6))
def test_structured_garbage_decodes_or_raises_decode_error(tag: int, fields: list) -> None:
    try:
        unpack_batch(packb([[tag, fields]]))
    except DecodeError:
        pass


def test_a_literal_field_takes_only_its_listed_values() -> None:
    @message(9990)
    @dataclass(frozen=True)
    class Mode:
        kind: Literal["udp", "quic"]

    assert unpack_batch(encode(Mode("quic")))[0].msg == Mode("quic")
    with pytest.raises(DecodeError, match="Mode.kind"):
        unpack_batch(packb([[9990, ["tcp"]]]))
    with pytest.raises(DecodeError, match="Mode.kind"):
        unpack_batch(packb([[9990, [1]]]))
