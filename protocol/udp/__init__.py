"""The datagrams of the worker's one UDP socket: demultiplexing, our frames, the original's.

The public API of the modules below, re-exported so that callers import it from one place:
``protocol.udp.demux`` (``classify``: which part of the worker a datagram belongs to, by its first
byte as in RFC 7983 / RFC 9443), ``protocol.udp.layouts`` (our frames and the one table that
lays them out), ``protocol.udp.codec`` (``encode_frame``/``decode_frame``) and
``protocol.udp.legacy`` (the original system's JSON and text datagrams).
"""

from __future__ import annotations

from protocol.udp.codec import decode_frame, encode_frame
from protocol.udp.demux import DatagramKind, classify
from protocol.udp.layouts import (
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
    ChatAck,
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
from protocol.udp.legacy import (
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
    "Chat", "ChatAck", "Frame", "FrameType", "Keepalive", "Layout", "Ping", "Pong", "Punch",
    "PunchAck", "Wire",
    "LEGACY_PUNCH", "MAX_LEGACY_SIZE", "LegacyChat", "LegacyDatagram", "LegacyPing",
    "LegacyPunch", "decode_legacy", "encode_legacy_chat", "encode_legacy_ping",
    "encode_legacy_punch",
]
