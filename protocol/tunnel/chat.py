"""Exactly-once, in-order chat across tunnels: the sender's ``Outbox`` and receiver's ``Inbox``.

The sender numbers its chats 1, 2, 3... within an ``Outbox`` (named by a random ``outbox_id``)
and keeps each one until the peer's cumulative ``ChatAck`` covers it; every new tunnel resends
whatever is still pending, in order. Chats travel in order on one QUIC stream, so the ids a
receiver has delivered from one outbox are always exactly ``1..n``: the ``Inbox`` remembers them
all with one integer per outbox, and drops any id ``<= n`` as a duplicate (a resend whose ack was
lost). The bound: ``MAX_SENDERS`` outboxes (least recently used evicted), one int each.

Both are plain data (``to_plain()`` / ``from_plain()``: dicts of bytes, ints, strings and lists,
msgpack-ready) because the actor that owns them can be restarted and must not lose or repeat a
chat when it is. The owner saves the ``Outbox`` after each ``send_chat`` (before the chat can
reach the wire: an id must never be reused) and the ``Inbox`` after each ``ChatReceived``; saving
the ``Outbox`` after ``ChatAcked`` only avoids needless resends.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from messages.errors import DecodeError, UsageError

# A UI chat line, not a file transfer; keeps a ChatMessage far below MAX_STREAM_FRAME_BYTES.
MAX_CHAT_BYTES = 16 * 1024
# Chats typed while the tunnel is down wait here; beyond this the peer is gone, not slow.
MAX_PENDING = 1000
# Outbox ids remembered by an Inbox; the peer makes a new one only when it loses its state.
MAX_SENDERS = 16
OUTBOX_ID_BYTES = 8


def _new_outbox_id() -> bytes:
    return os.urandom(OUTBOX_ID_BYTES)


@dataclass
class Outbox:
    """Chats not yet acknowledged by the peer, oldest first."""

    outbox_id: bytes = field(default_factory=_new_outbox_id)
    next_id: int = 1
    pending: list[tuple[int, str]] = field(default_factory=list)

    def add(self, text: str) -> int:
        """Queue ``text``; its id is the next in sequence."""
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise UsageError("a chat message must be encodable as UTF-8") from None
        if size > MAX_CHAT_BYTES:
            raise UsageError(f"a chat message is at most {MAX_CHAT_BYTES} bytes of UTF-8")
        if len(self.pending) >= MAX_PENDING:
            raise UsageError(f"{MAX_PENDING} chats already wait for the peer; not queueing more")
        msg_id, self.next_id = self.next_id, self.next_id + 1
        self.pending.append((msg_id, text))
        return msg_id

    def acknowledge(self, up_to: int) -> int:
        """Drop every chat with id ``<= up_to``; returns how many were dropped."""
        kept = [(msg_id, text) for msg_id, text in self.pending if msg_id > up_to]
        dropped = len(self.pending) - len(kept)
        self.pending = kept
        return dropped

    def after(self, msg_id: int) -> list[tuple[int, str]]:
        """Pending chats with an id above ``msg_id``, in order."""
        return [(i, text) for i, text in self.pending if i > msg_id]

    def to_plain(self) -> dict[str, Any]:
        return {
            "outbox_id": self.outbox_id,
            "next_id": self.next_id,
            "pending": [[msg_id, text] for msg_id, text in self.pending],
        }

    @classmethod
    def from_plain(cls, data: Any) -> Outbox:
        """Rebuild from ``to_plain()``'s output (e.g. read back from disk); raises DecodeError."""
        if not isinstance(data, dict) or not isinstance(data.get("pending"), list):
            raise DecodeError("a saved outbox is a dict with a 'pending' list")
        outbox_id, next_id = data.get("outbox_id"), data.get("next_id")
        if not _is_outbox_id(outbox_id) or type(next_id) is not int:
            raise DecodeError("a saved outbox has an 8-byte 'outbox_id' and an int 'next_id'")
        pending = [_pending_chat(item) for item in data["pending"]]
        ids = [msg_id for msg_id, _ in pending]
        if ids != sorted(set(ids)) or any(not 0 < i < next_id for i in ids):
            raise DecodeError("a saved outbox has out-of-order or future message ids")
        return cls(outbox_id, next_id, pending)


def _is_outbox_id(value: Any) -> TypeGuard[bytes]:
    return isinstance(value, bytes) and len(value) == OUTBOX_ID_BYTES


def _pending_chat(item: Any) -> tuple[int, str]:
    if isinstance(item, list) and len(item) == 2:
        msg_id, text = item
        if type(msg_id) is int and isinstance(text, str):
            return msg_id, text
    raise DecodeError("a saved pending chat is [msg_id, text]")


@dataclass
class Inbox:
    """Per sender outbox, the highest chat id delivered (see the module docstring)."""

    delivered: dict[bytes, int] = field(default_factory=dict)

    def accept(self, outbox_id: bytes, msg_id: int) -> bool:
        """True if the chat is new (deliver it), False if it is a duplicate."""
        last = self.delivered.pop(outbox_id, 0)
        self.delivered[outbox_id] = max(last, msg_id)  # re-inserted: most recently used
        while len(self.delivered) > MAX_SENDERS:
            del self.delivered[next(iter(self.delivered))]
        return msg_id > last

    def high_water(self, outbox_id: bytes) -> int:
        """The id a cumulative ack for this outbox carries."""
        return self.delivered.get(outbox_id, 0)

    def to_plain(self) -> dict[str, Any]:
        return {"delivered": [[outbox_id, n] for outbox_id, n in self.delivered.items()]}

    @classmethod
    def from_plain(cls, data: Any) -> Inbox:
        """Rebuild from ``to_plain()``'s output; raises DecodeError."""
        pairs = data.get("delivered") if isinstance(data, dict) else None
        if not isinstance(pairs, list) or not all(_is_delivery(pair) for pair in pairs):
            raise DecodeError("a saved inbox is {'delivered': [[outbox_id, msg_id], ...]}")
        return cls({outbox_id: msg_id for outbox_id, msg_id in pairs[-MAX_SENDERS:]})


def _is_delivery(pair: Any) -> bool:
    return (isinstance(pair, list) and len(pair) == 2 and _is_outbox_id(pair[0])
            and type(pair[1]) is int)


__all__ = ["MAX_CHAT_BYTES", "MAX_PENDING", "MAX_SENDERS", "Inbox", "Outbox"]
