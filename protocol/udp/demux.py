"""Demultiplexing of the worker's one UDP socket by the first byte of each datagram.

One socket carries STUN, QUIC and our frames; the first byte tells them apart as in
RFC 7983 section 7 / RFC 9443 section 3:

    0..3     STUN (RFC 8489 section 6: the two top bits are zero), checked by stun.is_stun
    4..15    unassigned in both RFCs (RFC 9443 routers drop it) -> our frames: FRAME_MAGIC 0x0B,
             a control byte that is not JSON whitespace (unlike 0x09, 0x0A, 0x0D), so no text
             or JSON datagram of the original system can start with it; and the benchmark's
             datagrams, BENCH_MAGIC 0x0E (``protocol.benchmark.frames``)
    64..127  QUIC short header (fixed bit set). '{' (0x7B) and 'P' (0x50) land here too, so the
             original system's JSON and text datagrams count as legacy only when they parse
    128..255 QUIC long header (128..191 only with a greased fixed bit, RFC 9287; this socket
             carries no RTP, to which RFC 7983 gives that range)
"""

from __future__ import annotations

from enum import Enum

from protocol.benchmark.frames import BENCH_MAGIC
from protocol.stun.codec import is_stun
from protocol.udp.layouts import FRAME_MAGIC
from protocol.udp.legacy import LEGACY_PUNCH, legacy_json_object


class DatagramKind(Enum):
    STUN = "stun"
    WORKER = "worker"
    BENCHMARK = "benchmark"
    QUIC = "quic"
    LEGACY_JSON = "legacy_json"
    LEGACY_TEXT = "legacy_text"
    UNKNOWN = "unknown"


def classify(datagram: bytes) -> DatagramKind:
    """Which part of the worker a received datagram belongs to; never raises."""
    first = datagram[0] if datagram else -1
    if 0 <= first <= 3:
        return DatagramKind.STUN if is_stun(datagram) else DatagramKind.UNKNOWN
    if first == FRAME_MAGIC:
        return DatagramKind.WORKER
    if first == BENCH_MAGIC:
        return DatagramKind.BENCHMARK
    if first < 64:
        return DatagramKind.UNKNOWN
    if first == ord("{") and legacy_json_object(datagram) is not None:
        return DatagramKind.LEGACY_JSON
    if first == ord("P") and LEGACY_PUNCH.fullmatch(datagram):
        return DatagramKind.LEGACY_TEXT
    return DatagramKind.QUIC
