"""Benchmark runs inside an up tunnel, sans-I/O: one bidirectional QUIC stream per run.

The sender opens the stream and writes ``stream_header`` (magic, size, SHA-256), exactly
``size`` bytes, FIN (``protocol.benchmark.stream``). The receiver counts and hashes as the bytes
arrive (``StreamCheck``: a header and a running digest, whatever the size) and at FIN answers on
the same stream with ``stream_reply`` and FIN. QUIC retransmits and orders, so the SHA-256 the
receiver computes is checked end to end against the one the sender announced.

The first four bytes tell a benchmark stream from the tunnel's framed streams
(``protocol.tunnel.frames``): a frame begins with its u32 length, and ``STREAM_MAGIC`` read as a
length is about 1.2 GB, far beyond ``MAX_STREAM_FRAME_BYTES``, so no framed stream starts so.

Memory: a sending stream holds what its owner wrote and QUIC has not sent yet; the owner keeps
that under its own window with ``unsent``. At most ``MAX_INCOMING`` receiving streams at once;
more are refused (STOP_SENDING), the peer's run then fails, nothing else does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aioquic.quic import events as quic_events
from aioquic.quic.connection import QuicConnection

from messages.errors import DecodeError, UsageError
from protocol.benchmark.stream import (
    STREAM_MAGIC,
    StreamCheck,
    StreamReply,
    StreamVerdict,
    parse_reply,
    stream_reply,
)
from protocol.tunnel.events import (
    BenchStreamAnswered,
    BenchStreamFailed,
    BenchStreamReceived,
    TunnelEvent,
)

MAX_INCOMING = 8
MAX_OUTGOING = 8
REFUSED = 0x1B  # the application error code of a refused or cancelled benchmark stream
REFUSAL = StreamReply(0, 2**64 - 1, bytes(32))  # the answer to a stream beyond MAX_INCOMING


@dataclass
class Outgoing:
    session_id: int
    started_at: float
    written: int = 0
    reply: bytearray = field(default_factory=bytearray)


@dataclass
class Incoming:
    started_at: float
    check: StreamCheck = field(default_factory=StreamCheck)


class BenchStreams:
    """The benchmark streams of one QUIC connection, both ways."""

    def __init__(self, quic: QuicConnection, emit: Callable[[TunnelEvent], None]) -> None:
        self._quic, self._emit = quic, emit
        self._out: dict[int, Outgoing] = {}  # stream id -> run
        self._stream_of: dict[int, int] = {}  # session id -> stream id
        self._in: dict[int, Incoming] = {}
        self._prefix: dict[int, bytes] = {}  # new peer streams with under 4 bytes so far

    # -- sending ----------------------------------------------------------------------------

    def write(self, session_id: int, data: bytes, end: bool, now: float) -> None:
        """The run's next bytes (its first write opens the stream and starts with the header)."""
        stream_id = self._stream_of.get(session_id)
        if stream_id is None:
            if len(self._out) >= MAX_OUTGOING:
                raise UsageError(f"{MAX_OUTGOING} benchmark streams are already open")
            if not data.startswith(STREAM_MAGIC):
                raise UsageError(f"benchmark run {session_id:08x} is not open on this tunnel")
            stream_id = self._quic.get_next_available_stream_id()
            self._stream_of[session_id] = stream_id
            self._out[stream_id] = Outgoing(session_id, now)
        run = self._out[stream_id]
        run.written += len(data)
        self._quic.send_stream_data(stream_id, data, end_stream=end)

    def unsent(self, session_id: int) -> int | None:
        """Bytes written but not yet on the wire once; None if the run has no stream here."""
        stream_id = self._stream_of.get(session_id)
        if stream_id is None:
            return None
        # aioquic keeps its streams private; highest_offset is the sender's public counter.
        stream = self._quic._streams.get(stream_id)
        sent = stream.sender.highest_offset if stream is not None else 0
        return self._out[stream_id].written - sent

    def cancel(self, session_id: int) -> None:
        stream_id = self._stream_of.pop(session_id, None)
        if stream_id is not None:
            del self._out[stream_id]
            self._quic.reset_stream(stream_id, REFUSED)

    # -- receiving --------------------------------------------------------------------------

    def claims(self, event: quic_events.QuicEvent) -> bool:
        """Whether a stream event belongs to a benchmark stream (then ``on_event`` takes it)."""
        if not isinstance(event, quic_events.StreamDataReceived | quic_events.StreamReset):
            return False
        stream_id = event.stream_id
        if stream_id in self._out or stream_id in self._in or stream_id in self._prefix:
            return True
        if not isinstance(event, quic_events.StreamDataReceived) or not self._peer_bidi(stream_id):
            return False
        head = event.data[:len(STREAM_MAGIC)]
        return STREAM_MAGIC.startswith(head) if len(head) < len(STREAM_MAGIC) else (
            head == STREAM_MAGIC)

    def on_event(self, event: quic_events.QuicEvent, now: float) -> None:
        stream_id = event.stream_id  # type: ignore[attr-defined]
        if stream_id in self._out:
            self._on_reply(stream_id, event, now)
        elif isinstance(event, quic_events.StreamReset):
            self._prefix.pop(stream_id, None)
            if stream_id in self._in:
                self._received(stream_id, None, now, "the sender reset the stream (cancelled)")
        else:
            assert isinstance(event, quic_events.StreamDataReceived)
            self._on_data(stream_id, event, now)

    def abort(self, reason: str) -> None:
        """The connection is gone: every open run ends, with ``reason``."""
        for run in self._out.values():
            self._emit(BenchStreamFailed(run.session_id, reason))
        for stream_id in list(self._in):
            self._received(stream_id, None, None, reason)
        self._out.clear()
        self._stream_of.clear()
        self._prefix.clear()

    def _peer_bidi(self, stream_id: int) -> bool:
        ours = 0 if self._quic.configuration.is_client else 1
        return (stream_id & 1) != ours and not stream_id & 2

    def _on_data(self, stream_id: int, event: quic_events.StreamDataReceived, now: float) -> None:
        data = event.data
        if stream_id not in self._in:
            data = self._prefix.pop(stream_id, b"") + data
            if len(data) < len(STREAM_MAGIC) and not event.end_stream:
                self._prefix[stream_id] = data
                return
            if len(self._in) >= MAX_INCOMING:  # say so on our half, stop the peer's
                self._quic.send_stream_data(stream_id, stream_reply(REFUSAL), end_stream=True)
                self._quic.stop_stream(stream_id, REFUSED)
                return
            self._in[stream_id] = Incoming(now)
        try:
            self._in[stream_id].check.feed(data)
            if event.end_stream:
                verdict = self._in[stream_id].check.verdict()
        except DecodeError as exc:
            self._quic.stop_stream(stream_id, REFUSED)
            self._received(stream_id, None, now, f"a malformed benchmark stream: {exc.reason}")
            return
        if event.end_stream:
            duration = now - self._in[stream_id].started_at
            reply = StreamReply(verdict.bytes_received, round(duration * 1e6), verdict.sha256)
            self._quic.send_stream_data(stream_id, stream_reply(reply), end_stream=True)
            self._received(stream_id, verdict, now, "")

    def _received(self, stream_id: int, verdict: StreamVerdict | None, now: float | None,
                  reason: str) -> None:
        incoming = self._in.pop(stream_id)
        duration = 0.0 if now is None else now - incoming.started_at
        self._emit(BenchStreamReceived(stream_id, verdict, duration, reason))

    def _on_reply(self, stream_id: int, event: quic_events.QuicEvent, now: float) -> None:
        run = self._out[stream_id]
        if isinstance(event, quic_events.StreamReset):
            self._end(stream_id)
            self._emit(BenchStreamFailed(run.session_id, "the receiver refused or dropped the "
                                                         "benchmark stream"))
            return
        assert isinstance(event, quic_events.StreamDataReceived)
        run.reply += event.data
        if len(run.reply) > 64:
            raise DecodeError("a benchmark stream reply longer than 64 bytes")
        if event.end_stream:
            self._end(stream_id)
            reply = parse_reply(bytes(run.reply))
            if reply == REFUSAL:
                self._emit(BenchStreamFailed(run.session_id, "the receiver refused the stream: "
                                             f"it already takes {MAX_INCOMING} runs"))
                return
            self._emit(BenchStreamAnswered(run.session_id, reply.bytes_received,
                                           reply.duration_us, reply.sha256,
                                           now - run.started_at))

    def _end(self, stream_id: int) -> None:
        run = self._out.pop(stream_id)
        self._stream_of.pop(run.session_id, None)


__all__ = ["MAX_INCOMING", "MAX_OUTGOING", "BenchStreams"]
