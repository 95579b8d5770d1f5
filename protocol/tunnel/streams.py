"""Per-stream frame reassembly for a tunnel, in arrival order.

QUIC delivers each stream's bytes in order but cuts them anywhere; one ``FrameReader`` per open
stream rebuilds the frames. A reader lives until its stream ends (FIN) or is reset, so there are
at most as many as the peer may open concurrently (aioquic grants 128 of each kind).

Application frames can beat the server's ``AuthAccepted`` to the client: the server is up once
it sent it, and its first chat may travel on another stream, in a packet that arrives first. The
client holds such frames (at most ``MAX_HELD_FRAMES``) and replays them once it is up.
"""

from __future__ import annotations

from collections.abc import Callable

from aioquic.quic import events as quic_events

from messages.errors import DecodeError
from protocol.tunnel.frames import Frame, FrameReader

# Only the few frames the server sends in its first round trip after AuthAccepted.
MAX_HELD_FRAMES = 64

FrameHandler = Callable[[int, Frame, float], None]


class StreamFrames:
    """Feeds stream events in, hands ``(stream_id, frame, now)`` to ``on_frame``."""

    def __init__(self, on_frame: FrameHandler, on_stream_end: Callable[[int], None]) -> None:
        self._on_frame = on_frame
        self._on_stream_end = on_stream_end
        self._readers: dict[int, FrameReader] = {}
        self._held: list[tuple[int, Frame]] = []

    def on_event(self, event: quic_events.QuicEvent, now: float) -> None:
        """Raises DecodeError (or AuthError from a handler) on the peer's misbehaviour."""
        if isinstance(event, quic_events.StreamDataReceived):
            self._on_data(event, now)
        elif isinstance(event, quic_events.StreamReset):
            self._readers.pop(event.stream_id, None)
            self._on_stream_end(event.stream_id)

    def hold(self, stream_id: int, frame: Frame) -> None:
        if len(self._held) >= MAX_HELD_FRAMES:
            raise DecodeError(f"more than {MAX_HELD_FRAMES} frames before authentication")
        self._held.append((stream_id, frame))

    def release_held(self, now: float) -> None:
        held, self._held = self._held, []
        for stream_id, frame in held:
            self._on_frame(stream_id, frame, now)

    def _on_data(self, event: quic_events.StreamDataReceived, now: float) -> None:
        reader = self._readers.setdefault(event.stream_id, FrameReader())
        for frame in reader.feed(event.data):
            self._on_frame(event.stream_id, frame, now)
        if event.end_stream:
            reader.finish()
            del self._readers[event.stream_id]
            self._on_stream_end(event.stream_id)


__all__ = ["MAX_HELD_FRAMES", "StreamFrames"]
