"""Mailboxes: Unix datagram sockets named by actor path, and the sending side that batches.

Why Unix datagram sockets: message boundaries are kept, delivery is reliable and ordered per
sending socket, and the queue lives in the kernel. The root supervisor binds every mailbox of its
tree once and keeps the socket open, so the queue survives any restart of the actor reading it:
messages sent while an actor is down wait there and are read by its next incarnation. The queue
is bounded by ``net.unix.max_dgram_qlen`` datagrams (10 by default) of up to ``MAX_FRAME_BYTES``
each; a sender that finds it full feels backpressure (EAGAIN, then waits for writability).

Addresses: an actor path names a file in the run directory; a name starting with ``@`` is a
socket in Linux's abstract namespace (replies, outside clients), which leaves no file behind and
vanishes with its process, so a dead asker or subscriber is noticed at the next send.
"""

from __future__ import annotations

import os
import socket
import struct
import uuid
from collections import deque

from messages.codec import MAX_FRAME_BYTES, STAMP_BYTES
from messages.errors import ActorUnavailable, MailboxFull, NoSuchActor

SOCKET_BUFFER = 1 << 20  # per sending socket: room for several full batches in flight
# What a sender keeps in its own memory for one target whose queue is full. Above HIGH_WATER a
# blocking sender blocks; above MAX_PENDING an asyncio tell fails with MailboxFull instead of
# growing without bound.
HIGH_WATER = 1 << 20
MAX_PENDING = 16 << 20
ITEM_OVERHEAD = 48  # a bytes object's header (33) and a deque slot (8), rounded up


def cost(item: bytes) -> int:
    """What a queued message costs in memory: its bytes, the bytes object and the queue's slot."""
    return len(item) + ITEM_OVERHEAD


def mailbox_file(rundir: str, path: str) -> str:
    """Where the mailbox of ``path`` lives: a file for an actor path (validated to
    [a-z0-9_-/]), the abstract socket for an ``@name``."""
    if path.startswith("@"):
        return "\0" + path[1:]
    return os.path.join(rundir, path.replace("/", ".") + ".mbox")


def bind_mailbox(file: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if not file.startswith("\0") and os.path.lexists(file):
        os.unlink(file)
    sock.bind(file)
    return sock


def private_address(kind: str) -> str:
    """A fresh ``@name`` for a process's reply socket or a client's inbox."""
    return f"@p2p-{kind}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def array_header(n: int) -> bytes:
    """The msgpack array header for ``n`` items, so packed envelopes can be joined as a batch."""
    if n < 16:
        return bytes([0x90 | n])
    if n < 0x10000:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


class Outlet:
    """The sending end towards one mailbox: a connected socket, reconnected when the receiving
    socket was re-created, and a queue of packed envelopes waiting to go."""

    def __init__(self, file: str, ephemeral: bool = False) -> None:
        self.file = file
        self.ephemeral = ephemeral  # a reply socket: if it is gone, its asker is gone too
        self.pending: deque[bytes] = deque()
        self.pending_bytes = 0
        self.failures = 0  # consecutive attempts that found no mailbox
        self.sock: socket.socket | None = None
        # Each datagram's stamp: this outlet's random id, then a sequence number.
        self.stamp = int.from_bytes(os.urandom(4), "big") << 32
        self.sent = 0

    def fileno(self) -> int:
        return self._connected().fileno()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def push(self, item: bytes) -> None:
        if self.pending_bytes + cost(item) > MAX_PENDING and not self.ephemeral:
            raise MailboxFull(
                f"{self.file}: {len(self.pending)} messages ({self.pending_bytes} bytes) are "
                f"already waiting for a full mailbox; the limit is {MAX_PENDING} bytes")
        self.pending.append(item)
        self.pending_bytes += cost(item)

    def clear(self) -> None:
        self.pending.clear()
        self.pending_bytes = 0

    def _connected(self) -> socket.socket:
        if self.sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            sock.setblocking(False)
            try:
                sock.connect(self.file)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                if self.file.startswith("\0") or isinstance(exc, FileNotFoundError):
                    raise NoSuchActor(f"no mailbox at {self.file.lstrip(chr(0))}") from None
                raise ActorUnavailable(f"mailbox {self.file} refuses messages") from None
            except OSError as exc:
                sock.close()
                raise ActorUnavailable(f"no mailbox at {self.file}: {exc.strerror}") from None
            self.sock = sock
        return self.sock

    def next_batch(self) -> tuple[bytes, int]:
        """Join as many pending envelopes as fit in one datagram; returns (datagram, count)."""
        size, count = STAMP_BYTES + 5, 0
        for item in self.pending:
            if count and size + len(item) > MAX_FRAME_BYTES:
                break
            size += len(item)
            count += 1
        items = [self.pending[i] for i in range(count)]
        stamp = (self.stamp | (self.sent & 0xFFFFFFFF)).to_bytes(STAMP_BYTES, "big")
        return stamp + array_header(count) + b"".join(items), count

    def flush(self) -> bool:
        """Send what is pending without blocking. True when all is sent, False on backpressure.
        Raises ActorUnavailable when the mailbox does not exist (its tree is not running)."""
        while self.pending:
            data, count = self.next_batch()
            try:
                self._send(data)
            except BlockingIOError:
                return False
            self.sent += 1
            for _ in range(count):
                self.pending_bytes -= cost(self.pending.popleft())
        return True

    def _send(self, data: bytes) -> None:
        try:
            self._connected().send(data)
        except ConnectionRefusedError:
            # The receiving socket was re-created (its tree restarted): connect afresh, once.
            self.close()
            try:
                self._connected().send(data)
            except ConnectionRefusedError:
                self.close()
                raise ActorUnavailable(f"mailbox {self.file} refuses messages") from None
