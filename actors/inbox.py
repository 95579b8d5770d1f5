"""Taking datagrams out of a mailbox with no window in which a death loses them.

A datagram is *peeked* (it stays at the head of the kernel queue), copied into the control block,
and only then dequeued. So at every instant it is in the queue, in the control block, or in both:

    peek ──► hold (the commit) ──► dequeue ──► handle ... ──► release
    death before the hold: the datagram is still queued; the next incarnation reads it afresh.
    death between hold and dequeue: it is held *and* still at the head of the queue, and the
        record says it was not dequeued; the next incarnation sees the head equal to what it
        holds and drops that copy.
    death after the dequeue: it is held and marked dequeued; the next incarnation resumes at
        the message in hand and leaves the queue alone. (Only a death in the instant between
        the dequeue and its mark leaves the head compared; there every datagram's stamp, unique
        per sending socket, tells a new datagram from the held one.)

One reader at a time is what makes "the head" well defined: each incarnation first takes the
actor's lock (``ControlBlock.claim``), which the kernel frees only when its holder is dead.
"""

from __future__ import annotations

import socket

from actors.control import ControlBlock
from messages.codec import MAX_FRAME_BYTES

_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT


class Inbox:
    def __init__(self, sock: socket.socket, control: ControlBlock) -> None:
        self.sock = sock
        self.control = control

    def take(self) -> bytes | None:
        """The next datagram, already held in the control block; None when the queue is empty.
        A datagram too large to hold is dequeued and returned empty (it is malformed)."""
        try:
            data = self.sock.recv(MAX_FRAME_BYTES + 1, _PEEK)
        except BlockingIOError:
            return None
        if len(data) > MAX_FRAME_BYTES:
            self._dequeue()
            return b""
        self.control.hold(data)
        self._dequeue()
        self.control.dequeued()
        return data

    def leftover(self) -> tuple[bytes, int, int] | None:
        """What a predecessor died holding: (datagram, index in hand, attempts), or None."""
        held = self.control.held()
        if held is None:
            return None
        if self.control.still_queued():
            try:
                head = self.sock.recv(MAX_FRAME_BYTES + 1, _PEEK)
            except BlockingIOError:
                head = None
            if head == held[0]:
                self._dequeue()  # it died between the hold and the dequeue
            self.control.dequeued()
        return held

    def _dequeue(self) -> None:
        # A datagram socket discards what does not fit the buffer: one byte dequeues it whole.
        self.sock.recv(1, socket.MSG_DONTWAIT)
