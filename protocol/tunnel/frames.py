"""Frames carried on the QUIC tunnel's streams: ``u32 length | msgpack [tag, field, ...]``.

QUIC streams are byte streams, so each frame is length-prefixed (big-endian, 4 bytes). The body
is a msgpack array whose first item is the ``FrameTag``; the remaining items are the frame's
fields in declaration order, each checked against its declared type (``bytes``, ``int`` >= 0
or ``str``). One table, ``FRAME_TYPES``, maps tags to frame classes.

These frames live inside an authenticated tunnel and never reach a mailbox, so they have their
own tag space rather than rows in ``messages.tags.Tag``.
"""

from __future__ import annotations

import dataclasses
import struct
import typing
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack

from messages.errors import DecodeError, FrameTooLarge, UnknownMessage, UsageError

LENGTH = struct.Struct("!I")
# Chat texts and echo payloads are bounded far below this (tunnel_chat.MAX_CHAT_BYTES,
# tunnel_app.MAX_ECHO_BYTES); a certificate in AuthProof is under 1 KiB.
MAX_STREAM_FRAME_BYTES = 64 * 1024


class FrameTag(IntEnum):
    AUTH_CHALLENGE = 1
    AUTH_PROOF = 2
    AUTH_ACCEPTED = 3
    QUIC_CHAT_MESSAGE = 16
    QUIC_CHAT_ACK = 17
    QUIC_ECHO_REQUEST = 18
    QUIC_ECHO_RESPONSE = 19


@dataclass(frozen=True)
class AuthChallenge:
    """Server -> client on the control stream: prove you hold the pinned key."""

    nonce: bytes


@dataclass(frozen=True)
class AuthProof:
    """Client -> server: our certificate (DER) and a signature over the auth transcript."""

    certificate: bytes
    signature: bytes


@dataclass(frozen=True)
class AuthAccepted:
    """Server -> client: the proof checked out; the tunnel is up."""


@dataclass(frozen=True)
class ChatMessage:
    outbox_id: bytes
    msg_id: int
    text: str


@dataclass(frozen=True)
class ChatAck:
    """Cumulative: every chat of ``outbox_id`` up to ``msg_id`` is delivered."""

    outbox_id: bytes
    msg_id: int


@dataclass(frozen=True)
class EchoRequest:
    request_id: int
    payload: bytes


@dataclass(frozen=True)
class EchoResponse:
    request_id: int
    payload: bytes


Frame = (
    AuthChallenge | AuthProof | AuthAccepted | ChatMessage | ChatAck | EchoRequest | EchoResponse
)
FRAME_TYPES: dict[int, type] = {
    FrameTag.AUTH_CHALLENGE: AuthChallenge,
    FrameTag.AUTH_PROOF: AuthProof,
    FrameTag.AUTH_ACCEPTED: AuthAccepted,
    FrameTag.QUIC_CHAT_MESSAGE: ChatMessage,
    FrameTag.QUIC_CHAT_ACK: ChatAck,
    FrameTag.QUIC_ECHO_REQUEST: EchoRequest,
    FrameTag.QUIC_ECHO_RESPONSE: EchoResponse,
}
TAGS: dict[type, int] = {cls: tag for tag, cls in FRAME_TYPES.items()}
FIELD_TYPES: dict[type, tuple[type, ...]] = {
    cls: tuple(typing.get_type_hints(cls)[f.name] for f in dataclasses.fields(cls))
    for cls in FRAME_TYPES.values()
}


def encode_stream_frame(frame: Frame) -> bytes:
    """Length prefix and msgpack body of one frame."""
    if type(frame) not in TAGS:
        raise UsageError(f"{type(frame).__name__} is not a tunnel frame")
    values = [getattr(frame, f.name) for f in dataclasses.fields(frame)]
    body = msgpack.packb([int(TAGS[type(frame)]), *values], use_bin_type=True)
    if len(body) > MAX_STREAM_FRAME_BYTES:
        raise UsageError(
            f"{type(frame).__name__} of {len(body)} bytes exceeds {MAX_STREAM_FRAME_BYTES}")
    return LENGTH.pack(len(body)) + body


def decode_body(body: bytes) -> Frame:
    """One frame body (without its length prefix); raises only DecodeError."""
    if len(body) > MAX_STREAM_FRAME_BYTES:
        raise FrameTooLarge(f"frame of {len(body)} bytes exceeds {MAX_STREAM_FRAME_BYTES}")
    try:
        items = msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises a zoo of types on hostile input
        raise DecodeError(f"frame is not msgpack: {type(exc).__name__}") from None
    if not isinstance(items, list) or not items:
        raise DecodeError("a frame body is a non-empty msgpack array")
    tag, values = items[0], items[1:]
    cls = FRAME_TYPES.get(tag) if type(tag) is int else None
    if cls is None:
        raise UnknownMessage(f"unknown tunnel frame tag {tag!r}")
    return cls(*_checked(cls, values))


def _checked(cls: type, values: list[Any]) -> list[Any]:
    types = FIELD_TYPES[cls]
    if len(values) != len(types):
        raise DecodeError(f"{cls.__name__} takes {len(types)} fields, got {len(values)}")
    for value, expected in zip(values, types):
        if type(value) is not expected or (isinstance(value, int) and value < 0):
            raise DecodeError(f"{cls.__name__}: expected {expected.__name__}, got {value!r:.40}")
    return values


class FrameReader:
    """Reassembles frames from one stream's bytes, holding at most one partial frame."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        """The complete frames ``data`` finishes; raises only DecodeError."""
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= LENGTH.size:
            (size,) = LENGTH.unpack_from(self._buffer)
            if size > MAX_STREAM_FRAME_BYTES:
                raise FrameTooLarge(f"frame of {size} bytes exceeds {MAX_STREAM_FRAME_BYTES}")
            end = LENGTH.size + size
            if len(self._buffer) < end:
                break
            frames.append(decode_body(bytes(self._buffer[LENGTH.size:end])))
            del self._buffer[:end]
        return frames

    def finish(self) -> None:
        """The stream ended: a partial frame left over is the peer's fault."""
        if self._buffer:
            raise DecodeError(f"stream ended inside a frame ({len(self._buffer)} bytes left)")


__all__ = [
    "FRAME_TYPES",
    "MAX_STREAM_FRAME_BYTES",
    "AuthAccepted",
    "AuthChallenge",
    "AuthProof",
    "ChatAck",
    "ChatMessage",
    "EchoRequest",
    "EchoResponse",
    "Frame",
    "FrameReader",
    "FrameTag",
    "decode_body",
    "encode_stream_frame",
]
