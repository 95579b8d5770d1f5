"""Mailboxes: Unix datagram sockets named by actor path, and the sending side that batches.

Why Unix datagram sockets: message boundaries are kept, delivery is reliable and ordered per
sending socket, and the queue lives in the kernel. The root supervisor binds every mailbox of its
tree once and keeps the socket open, so the queue survives any restart of the actor reading it:
messages sent while an actor is down wait there and are read by its next incarnation. The queue
is bounded by ``net.unix.max_dgram_qlen`` datagrams (10 by default) of up to ``MAX_FRAME_BYTES``
each; a sender that finds it full feels backpressure (EAGAIN, then waits for writability).
"""

from __future__ import annotations

import os
import socket
import struct
import uuid
from collections import deque

from messages.codec import MAX_FRAME_BYTES
from messages.errors import ActorUnavailable

SOCKET_BUFFER = 1 << 20  # per sending socket: room for several full batches in flight


def mailbox_file(rundir: str, path: str) -> str:
    """Where the mailbox of actor ``path`` lives (paths are validated to [a-z0-9_-/])."""
    return os.path.join(rundir, path.replace("/", ".") + ".mbox")


def bind_mailbox(file: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if os.path.exists(file):
        os.unlink(file)
    sock.bind(file)
    return sock


def reply_socket(rundir: str) -> tuple[socket.socket, str]:
    """A private socket for the replies to this process's asks."""
    file = os.path.join(rundir, f"r-{os.getpid()}-{uuid.uuid4().hex[:8]}.sock")
    return bind_mailbox(file), file


def array_header(n: int) -> bytes:
    """The msgpack array header for ``n`` items, so packed envelopes can be joined as a batch."""
    if n < 16:
        return bytes([0x90 | n])
    if n < 0x10000:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


class Outlet:
    """The sending end towards one mailbox file: a connected socket, reconnected when the
    receiving socket was re-created, and a queue of packed envelopes waiting to go."""

    def __init__(self, file: str, ephemeral: bool = False) -> None:
        self.file = file
        self.ephemeral = ephemeral  # a reply socket: if it is gone, its asker is gone too
        self.pending: deque[bytes] = deque()
        self.failures = 0  # consecutive attempts that found no mailbox
        self.sock: socket.socket | None = None

    def fileno(self) -> int:
        return self._connected().fileno()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _connected(self) -> socket.socket:
        if self.sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            sock.setblocking(False)
            try:
                sock.connect(self.file)
            except OSError as exc:
                sock.close()
                raise ActorUnavailable(f"no mailbox at {self.file}: {exc.strerror}") from None
            self.sock = sock
        return self.sock

    def next_batch(self) -> tuple[bytes, int]:
        """Join as many pending envelopes as fit in one datagram; returns (datagram, count)."""
        size, count = 5, 0
        for item in self.pending:
            if count and size + len(item) > MAX_FRAME_BYTES:
                break
            size += len(item)
            count += 1
        items = [self.pending[i] for i in range(count)]
        return array_header(count) + b"".join(items), count

    def flush(self) -> bool:
        """Send what is pending without blocking. True when all is sent, False on backpressure.
        Raises ActorUnavailable when the mailbox does not exist (its tree is not running)."""
        while self.pending:
            data, count = self.next_batch()
            try:
                self._send(data)
            except BlockingIOError:
                return False
            for _ in range(count):
                self.pending.popleft()
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
