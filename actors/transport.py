"""How a process sends: ``tell`` and ``ask`` over mailboxes, in an event loop or blocking.

``AsyncTransport`` serves asyncio actors: a ``tell`` is queued on the target's ``Outlet`` and all
tells of one loop iteration leave as one datagram (the data plane's batching). Backpressure waits
for the socket to become writable; a mailbox that is missing (its tree is restarting) is retried.
``SyncTransport`` serves blocking actors and outside clients (tests, the CLI): it sends at once and
blocks, up to a deadline, on backpressure and on replies.

Replies come back on a private socket per process, so an actor can await an ``ask`` while its
mailbox waits untouched. What a process told before it answers an ``ask`` leaves before the reply,
so the asker never sees the answer overtake the tells that preceded it.

An ``ask`` has one deadline, for sending and for the reply together; it travels in the envelope, and
a receiver skips an ask whose asker has already given up.

Memory is bounded: a sender keeps at most ``MAX_PENDING`` bytes for one target whose queue is full
(``MailboxFull`` beyond it), and a blocking sender blocks above ``HIGH_WATER``. An actor handling
its mailbox sends what each message told before it takes the next one; what a full mailbox cannot
take yet waits here, and leaves as soon as there is room.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import select
import threading
import time
from collections import OrderedDict
from typing import Any

import msgpack

from actors.mailbox import HIGH_WATER, Outlet, bind_mailbox, cost, mailbox_file, private_address
from messages.codec import MAX_FRAME_BYTES, decode_envelope, encode_envelope, unpack_batch
from messages.errors import ActorUnavailable, AskTimeout, DecodeError, NoSuchActor, RemoteError
from messages.runtime import Reply

log = logging.getLogger("actors.transport")

RETRY = 0.02  # seconds between attempts to reach a mailbox that is missing
SEND_DEADLINE = 10.0  # a blocking send gives up (ActorUnavailable) after this long
REPLY_SOCKETS = 64  # askers whose reply socket stays open between their asks


def reply_for(result: Any) -> Reply:
    """Wrap a handler's return value; a registered message travels in its envelope form."""
    if hasattr(type(result), "TAG"):
        return Reply(True, encode_envelope(result), "message")
    return Reply(True, result)


def reply_value(reply: Reply) -> Any:
    if not reply.ok:
        raise RemoteError(reply.error_type, reply.error)
    if reply.error_type == "message":
        return decode_envelope(reply.value).msg
    return reply.value


class Transport:
    def __init__(self, rundir: str) -> None:
        self.rundir = rundir
        self.outlets: dict[str, Outlet] = {}
        self.reply_outlets: OrderedDict[str, Outlet] = OrderedDict()
        # In the abstract namespace: no file to leak when the process dies.
        self.reply_file = mailbox_file(rundir, private_address("r"))
        self.replies = bind_mailbox(self.reply_file)
        self.replies.setblocking(False)
        self.corr = itertools.count(1)

    def outlet(self, file: str, ephemeral: bool = False) -> Outlet:
        out = self.outlets.get(file)
        if out is None:
            out = self.outlets[file] = Outlet(file, ephemeral)
        return out

    def enqueue(self, file: str, msg: Any, corr: int = 0, reply_to: str | None = None,
                deadline: float = 0.0) -> tuple[Outlet, bytes]:
        out = self.outlet(file, ephemeral=reply_to == "")
        item = msgpack.packb(encode_envelope(msg, corr, reply_to, deadline), use_bin_type=True)
        if len(item) > MAX_FRAME_BYTES - 16:
            raise ValueError(f"{type(msg).__name__} of {len(item)} bytes exceeds one frame")
        out.push(item)
        return out, item

    def send_reply(self, file: str, corr: int, reply: Reply) -> None:
        """Answer an ask at once, or not at all: an asker whose reply socket is full or gone is
        not waiting any more, so nothing is kept for it. The sockets of the last
        ``REPLY_SOCKETS`` askers stay open for their next asks; older ones are closed."""
        out = self.reply_outlets.pop(file, None) or Outlet(file, ephemeral=True)
        out.push(msgpack.packb(encode_envelope(reply, corr, ""), use_bin_type=True))
        try:
            sent = out.flush()
        except ActorUnavailable:
            sent = False
        if not sent:
            out.close()
            log.debug("reply dropped: the asker is gone or not reading",
                      extra={"asker": file.lstrip("\0")})
            return
        self.reply_outlets[file] = out
        if len(self.reply_outlets) > REPLY_SOCKETS:
            self.reply_outlets.popitem(last=False)[1].close()

    def withdraw(self, out: Outlet, item: bytes) -> None:
        """Take back a message that has not left yet (an ask that timed out before sending)."""
        try:
            out.pending.remove(item)
        except ValueError:
            return
        out.pending_bytes -= cost(item)

    def file_of(self, path: str) -> str:
        return mailbox_file(self.rundir, path)

    def close(self) -> None:
        for out in [*self.outlets.values(), *self.reply_outlets.values()]:
            out.close()
        self.replies.close()


class AsyncTransport(Transport):
    def __init__(self, rundir: str, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(rundir)
        self.loop = loop
        self.waiting: dict[int, asyncio.Future[Reply]] = {}
        self.dirty: set[Outlet] = set()
        self.flush_scheduled = False
        self.stuck: set[Outlet] = set()  # outlets holding messages that could not leave yet
        loop.add_reader(self.replies.fileno(), self._read_replies)

    def tell(self, path: str, msg: Any) -> None:
        self._queue(self.enqueue(self.file_of(path), msg)[0])

    def reply(self, file: str, corr: int, reply: Reply) -> None:
        # A reply goes at once (someone is waiting on it), after what was told before it.
        self.flush()
        self.send_reply(file, corr, reply)

    async def ask(self, path: str, msg: Any, timeout: float = 5.0) -> Any:
        corr = next(self.corr)
        future: asyncio.Future[Reply] = self.loop.create_future()
        self.waiting[corr] = future
        out, item = self.enqueue(self.file_of(path), msg, corr, self.reply_file,
                                 time.monotonic() + timeout)
        self._queue(out)
        try:
            reply = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self.withdraw(out, item)
            raise AskTimeout(f"{path} did not answer {type(msg).__name__} in {timeout} s") from None
        finally:
            self.waiting.pop(corr, None)
        return reply_value(reply)

    def _queue(self, out: Outlet) -> None:
        self.dirty.add(out)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send what was told since the last flush, now, without blocking. An outlet waiting
        for room (or for its mailbox) is left to its own retry."""
        self.flush_scheduled = False
        dirty, self.dirty = self.dirty, set()
        for out in dirty:
            if out not in self.stuck:
                self._flush_one(out)

    def _flush_one(self, out: Outlet) -> None:
        try:
            if out.flush():
                out.failures = 0
                self._unstuck(out)
                return
            self.stuck.add(out)
            self.loop.add_writer(out.fileno(), self._writable, out)
        except ActorUnavailable as exc:
            if out.ephemeral:
                out.clear()  # a reply socket that is gone: its asker died
                self._unstuck(out)
                return
            self.stuck.add(out)
            out.failures += 1
            if out.failures in (1, 50, 500) or out.failures % 5000 == 0:
                log.warning("mailbox unavailable, messages kept and retried",
                            extra={"mailbox": out.file, "queued": len(out.pending),
                                   "attempts": out.failures, "error": exc.reason})
            # Back off from 20 ms to 1 s: a restarting subtree is back in milliseconds, a
            # mistyped path never is.
            self.loop.call_later(min(RETRY * out.failures, 1.0), self._flush_one, out)

    def _writable(self, out: Outlet) -> None:
        self.loop.remove_writer(out.fileno())
        self._flush_one(out)

    def _unstuck(self, out: Outlet) -> None:
        self.stuck.discard(out)

    def _read_replies(self) -> None:
        while True:
            try:
                data = self.replies.recv(MAX_FRAME_BYTES)
            except BlockingIOError:
                return
            try:
                envelopes = unpack_batch(data)
            except DecodeError:
                continue
            for env in envelopes:
                future = self.waiting.get(env.corr)
                if future is not None and not future.done() and isinstance(env.msg, Reply):
                    future.set_result(env.msg)


class SyncTransport(Transport):
    """Blocking sends and asks; safe to share between threads.

    A ``tell`` that meets a full mailbox stays queued in this process (up to ``HIGH_WATER``
    bytes per target, beyond which it blocks until they leave or its deadline passes) and goes
    out with the next send, or with ``flush()``; an ``ask`` first delivers everything queued
    before it, so order holds. A target with no mailbox at all raises ``NoSuchActor`` at once.
    """

    def __init__(self, rundir: str, waiting: Any = None) -> None:
        super().__init__(rundir)
        self.lock = threading.Lock()  # the outlets
        self.asking = threading.Lock()  # the reply socket
        self.waiting = waiting or (lambda: None)  # called while blocked on backpressure

    def tell(self, path: str, msg: Any, deadline: float = SEND_DEADLINE) -> None:
        with self.lock:
            out, _ = self.enqueue(self.file_of(path), msg)
            self._drain_others(out)
            if out.pending_bytes > HIGH_WATER:
                self._send(out, time.monotonic() + deadline)
            else:
                self._try(out)

    def flush(self, deadline: float = SEND_DEADLINE) -> None:
        with self.lock:
            for out in list(self.outlets.values()):
                if out.pending and not out.ephemeral:
                    self._send(out, time.monotonic() + deadline)

    def try_flush(self) -> None:
        """Send what waits for full mailboxes, without blocking (a supervisor calls this on
        every tick, so events wait no longer than their subscriber's queue is full)."""
        if any(out.pending for out in self.outlets.values()):
            with self.lock:
                self._drain_others(None)

    def reply(self, file: str, corr: int, reply: Reply) -> None:
        with self.lock:
            self._drain_others(None)  # what was told before the reply leaves before it
            self.send_reply(file, corr, reply)

    def ask(self, path: str, msg: Any, timeout: float = 5.0) -> Any:
        """One deadline for sending and for the reply; a request that could not leave in time
        is withdrawn, and one that left is skipped by its receiver once the deadline passed.
        Asks through one transport take turns (one reply socket); tells never wait for them."""
        deadline = time.monotonic() + timeout
        with self.asking:
            with self.lock:
                corr = next(self.corr)
                out, item = self.enqueue(self.file_of(path), msg, corr, self.reply_file, deadline)
                try:
                    self._send(out, deadline)
                except ActorUnavailable as exc:
                    self.withdraw(out, item)
                    if isinstance(exc, NoSuchActor):
                        raise
                    raise AskTimeout(f"{path} did not take {type(msg).__name__} within "
                                     f"{timeout} s ({exc.reason})") from None
            return reply_value(self._await_reply(path, msg, corr, deadline))

    def _try(self, out: Outlet) -> None:
        try:
            out.flush()
        except NoSuchActor:
            out.clear()
            raise
        except ActorUnavailable:
            pass  # stays queued: the mailbox is being re-created

    def _drain_others(self, current: Outlet | None) -> None:
        """Send what others wait for, where there is room now: one select for all of them, so
        a few subscribers that never read cost nothing per event."""
        waiting = [out for out in self.outlets.values()
                   if out is not current and out.pending and not out.ephemeral]
        if not waiting:
            return
        connected = [out for out in waiting if out.sock is not None]
        _, writable, _ = select.select([], connected, [], 0) if connected else ([], [], [])
        for out in writable + [out for out in waiting if out.sock is None]:
            try:
                self._try(out)
            except NoSuchActor:
                pass  # that tell's sender has already been told

    def _send(self, out: Outlet, deadline: float) -> None:
        while True:
            try:
                if out.flush():
                    return
                select.select([], [out.fileno()], [],
                              min(RETRY * 5, max(0.0, deadline - time.monotonic())))
                self.waiting()
            except NoSuchActor:
                out.clear()
                raise
            except ActorUnavailable:
                time.sleep(RETRY)  # the mailbox is being re-created; poll until the deadline
            if time.monotonic() >= deadline:
                raise ActorUnavailable(
                    f"could not deliver to {out.file} in time "
                    f"({len(out.pending)} messages still queued)")

    def _await_reply(self, path: str, msg: Any, corr: int, deadline: float) -> Reply:
        while (left := deadline - time.monotonic()) > 0:
            self.replies.settimeout(left)  # one blocking recv, not a select then a recv
            try:
                data = self.replies.recv(MAX_FRAME_BYTES)
            except (TimeoutError, BlockingIOError):
                break
            try:
                envelopes = unpack_batch(data)
            except DecodeError:
                continue
            for env in envelopes:
                if env.corr == corr and isinstance(env.msg, Reply):
                    return env.msg
        raise AskTimeout(f"{path} did not answer {type(msg).__name__} in time")
