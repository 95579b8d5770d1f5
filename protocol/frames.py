"""The datagrams of the worker's one UDP socket: demultiplexing, our frames, the original's.

The public API of the modules below, re-exported so that callers import it from one place:
``protocol.demux`` (``classify``: which part of the worker a datagram belongs to, by its first
byte as in RFC 7983 / RFC 9443), ``protocol.frame_layouts`` (our frames and the one table that
lays them out), ``protocol.frame_codec`` (``encode_frame``/``decode_frame``) and
``protocol.legacy`` (the original system's JSON and text datagrams).
"""

from __future__ import annotations

from protocol.demux import DatagramKind, classify
from protocol.frame_codec import decode_frame, encode_frame
from protocol.frame_layouts import (
    END_MARKER,
    FRAME_LAYOUTS,
    FRAME_MAGIC,
    FRAME_VERSION,
    MAX_BENCH_PAYLOAD,
    MAX_CHAT_TEXT_BYTES,
    MAX_FRAME_SIZE,
    TOKEN_SIZE,
    WORKER_ID,
    BenchData,
    BenchEnd,
    Chat,
    Frame,
    FrameType,
    Keepalive,
    Layout,
    Ping,
    Pong,
    Punch,
    PunchAck,
    Wire,
)
from protocol.legacy import (
    LEGACY_PUNCH,
    MAX_LEGACY_SIZE,
    LegacyChat,
    LegacyDatagram,
    LegacyPing,
    LegacyPunch,
    decode_legacy,
    encode_legacy_chat,
    encode_legacy_ping,
    encode_legacy_punch,
)

__all__ = [
    "DatagramKind", "classify",
    "decode_frame", "encode_frame",
    "END_MARKER", "FRAME_LAYOUTS", "FRAME_MAGIC", "FRAME_VERSION", "MAX_BENCH_PAYLOAD",
    "MAX_CHAT_TEXT_BYTES", "MAX_FRAME_SIZE", "TOKEN_SIZE", "WORKER_ID", "BenchData", "BenchEnd",
    "Chat", "Frame", "FrameType", "Keepalive", "Layout", "Ping", "Pong", "Punch", "PunchAck",
    "Wire",
    "LEGACY_PUNCH", "MAX_LEGACY_SIZE", "LegacyChat", "LegacyDatagram", "LegacyPing",
    "LegacyPunch", "decode_legacy", "encode_legacy_chat", "encode_legacy_ping",
    "encode_legacy_punch",
]
