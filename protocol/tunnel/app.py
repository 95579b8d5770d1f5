"""Chat and echo over an authenticated tunnel's QUIC streams.

Streams (RFC 9000 §2.1 stream ids: bit 0 is the initiator, bit 1 marks unidirectional):
- each side opens one unidirectional *chat stream* and writes its ``ChatMessage``s and its
  ``ChatAck``s for the peer's chats there, in order;
- each echo is its own bidirectional stream: ``EchoRequest`` + FIN one way, ``EchoResponse`` + FIN
  back, so an echo never waits behind a chat.

A frame that does not belong where it arrived raises DecodeError; the tunnel closes on it.
"""

from __future__ import annotations

from collections.abc import Callable

from aioquic.quic.connection import QuicConnection

from messages.errors import DecodeError, UsageError
from protocol.tunnel.chat import OUTBOX_ID_BYTES, Inbox, Outbox
from protocol.tunnel.events import ChatAcked, ChatReceived, EchoReplied, TunnelEvent
from protocol.tunnel.frames import (
    ChatAck,
    ChatMessage,
    EchoRequest,
    EchoResponse,
    Frame,
    encode_stream_frame,
)

# An echo measures round trips; it is not a bulk transfer (bench/ does those).
MAX_ECHO_BYTES = 16 * 1024
MAX_PENDING_ECHOES = 64


class AppStreams:
    """The application half of an UP tunnel: sends chats and echoes, answers the peer's."""

    def __init__(
        self,
        quic: QuicConnection,
        outbox: Outbox,
        inbox: Inbox,
        emit: Callable[[TunnelEvent], None],
    ) -> None:
        self._quic = quic
        self._outbox = outbox
        self._inbox = inbox
        self._emit = emit
        self._chat_stream = quic.get_next_available_stream_id(is_unidirectional=True)
        self._chats_sent_up_to = 0  # within this connection; a new tunnel resends the rest
        self._echo_sent_at: dict[int, float | None] = {}  # None: queued, not yet on the wire
        self._next_echo_id = 1
        self._answered_echoes: set[int] = set()  # peer streams whose request we answered

    def flush_chats(self) -> None:
        """Write every pending chat this connection has not carried yet."""
        for msg_id, text in self._outbox.after(self._chats_sent_up_to):
            self._send(self._chat_stream, ChatMessage(self._outbox.outbox_id, msg_id, text))
            self._chats_sent_up_to = msg_id

    def send_echo(self, payload: bytes) -> int:
        if len(payload) > MAX_ECHO_BYTES:
            raise UsageError(f"an echo payload is at most {MAX_ECHO_BYTES} bytes")
        if len(self._echo_sent_at) >= MAX_PENDING_ECHOES:
            raise UsageError(f"{MAX_PENDING_ECHOES} echoes are already unanswered")
        request_id, self._next_echo_id = self._next_echo_id, self._next_echo_id + 1
        stream_id = self._quic.get_next_available_stream_id()
        self._send(stream_id, EchoRequest(request_id, payload), end_stream=True)
        self._echo_sent_at[request_id] = None
        return request_id

    def stamp_sent(self, now: float) -> None:
        """Echoes queued since the last flush leave now: the RTT clock starts here."""
        for request_id, sent_at in self._echo_sent_at.items():
            if sent_at is None:
                self._echo_sent_at[request_id] = now

    def stream_ended(self, stream_id: int) -> None:
        self._answered_echoes.discard(stream_id)

    def on_frame(self, stream_id: int, frame: Frame, now: float) -> None:
        if isinstance(frame, ChatMessage):
            self._on_chat(frame)
        elif isinstance(frame, ChatAck):
            self._on_chat_ack(frame)
        elif isinstance(frame, EchoRequest):
            self._on_echo_request(stream_id, frame)
        elif isinstance(frame, EchoResponse):
            self._on_echo_response(frame, now)
        else:
            raise DecodeError(f"{type(frame).__name__} after the tunnel is up")

    def _on_chat(self, chat: ChatMessage) -> None:
        if len(chat.outbox_id) != OUTBOX_ID_BYTES or chat.msg_id < 1:
            raise DecodeError(f"chat {chat.msg_id} with a malformed id or outbox id")
        if self._inbox.accept(chat.outbox_id, chat.msg_id):
            self._emit(ChatReceived(chat.msg_id, chat.text))
        # Acknowledge duplicates too: a resend means our previous ack was lost.
        ack = ChatAck(chat.outbox_id, self._inbox.high_water(chat.outbox_id))
        self._send(self._chat_stream, ack)

    def _on_chat_ack(self, ack: ChatAck) -> None:
        if ack.outbox_id != self._outbox.outbox_id:
            return  # an ack for an outbox we no longer have (we lost our state): nothing to drop
        if ack.msg_id >= self._outbox.next_id:
            raise DecodeError(f"ack for chat {ack.msg_id}, which was never sent")
        if self._outbox.acknowledge(ack.msg_id):
            self._emit(ChatAcked(ack.msg_id))

    def _on_echo_request(self, stream_id: int, request: EchoRequest) -> None:
        peer_opened = (stream_id & 1) != (0 if self._quic.configuration.is_client else 1)
        if not peer_opened or stream_id & 2 or stream_id in self._answered_echoes:
            raise DecodeError(f"an echo request on stream {stream_id} cannot be answered there")
        self._answered_echoes.add(stream_id)
        self._send(stream_id, EchoResponse(request.request_id, request.payload), end_stream=True)

    def _on_echo_response(self, response: EchoResponse, now: float) -> None:
        sent_at = self._echo_sent_at.pop(response.request_id, None)
        if sent_at is None:
            raise DecodeError(f"echo response to unknown request {response.request_id}")
        self._emit(EchoReplied(response.request_id, response.payload, now - sent_at))

    def _send(self, stream_id: int, frame: Frame, end_stream: bool = False) -> None:
        self._quic.send_stream_data(stream_id, encode_stream_frame(frame), end_stream=end_stream)


__all__ = ["MAX_ECHO_BYTES", "MAX_PENDING_ECHOES", "AppStreams"]
