"""Serving one actor's mailbox: the delivery rules every runner shares, and the blocking runner.

Delivery rules (see docs/ARCHITECTURE.md): a mailbox datagram is held in the control block before
it leaves the kernel queue (``actors.inbox``) and released after its last message, with the index
of the message in hand kept current. An incarnation that dies mid-batch leaves the rest of the
batch there; the next one resumes at that message and counts the attempt. After ``MAX_ATTEMPTS``
crashes on the same message it is set aside as a dead letter, reported to the supervisor and
logged.

Liveness: the heartbeat is written before every message as well as every ``BEAT`` seconds, so an
actor that is handling messages, however many, is never taken for hung; one stuck in a single
message for longer than its ``liveness`` is.
"""

from __future__ import annotations

import ctypes
import inspect
import logging
import os
import select
import signal
import time
from collections.abc import Iterator
from typing import Any

from actors.actor import Actor, ActorContext
from actors.boot import EXIT_CRASHED, EXIT_FAULT, Boot
from actors.control import BEAT, ControlBlock
from actors.inbox import Inbox
from actors.spec import ChildSpec
from actors.transport import AsyncTransport, SyncTransport, reply_for
from messages.codec import MAX_FRAME_BYTES, Envelope, decode_envelope, unpack_raw
from messages.errors import DecodeError, PeerError
from messages.runtime import DeadLetter, Fault, Reply

MAX_ATTEMPTS = 3  # crashes on one message before it becomes a dead letter

log = logging.getLogger("actors.child")


class FaultInjected(RuntimeError):
    """Raised by the ``raise`` fault, as a handler bug would be."""


class Runner:
    def __init__(self, boot: Boot, cls: type[Actor]) -> None:
        self.boot = boot
        self.cls = cls
        self.control = ControlBlock(boot.control_file)
        self.control.claim()  # waits out a predecessor that is not dead yet
        self.inbox = Inbox(boot.mailbox, self.control)
        self.stopping = False
        self.held = 0  # length of the datagram in hand
        self.now = time.monotonic()
        self.actor: Actor
        self.transport: AsyncTransport | SyncTransport

    def context(self) -> ActorContext:
        spec = self.boot.spec
        return ActorContext(self.boot.path, self.boot.rundir, self.transport,
                            dict(spec.config) if isinstance(spec, ChildSpec) else {},
                            self.boot.sockets, spawner=self.spawn)

    def spawn(self, coro: Any) -> Any:
        raise TypeError("only asyncio actors run background tasks")

    def ready(self) -> None:
        self.boot.status.send(("ready", os.getpid()))
        log.debug("ready", extra={"pid": os.getpid()})

    def resume(self) -> tuple[bytes, int, int] | None:
        """What a predecessor left in flight: (batch, index, attempts), a dead letter set aside."""
        held = self.inbox.leftover()
        if held is None:
            return None
        batch, index, attempts = held
        attempts += 1
        if attempts >= MAX_ATTEMPTS:
            self.dead_letter(batch, index, attempts)
            self.control.at(len(batch), index + 1, 0)
            return batch, index + 1, 0
        log.warning("redelivering the message in flight at the crash",
                    extra={"index": index, "attempt": attempts + 1})
        return batch, index, attempts

    def dead_letter(self, batch: bytes, index: int, attempts: int) -> None:
        try:
            env = decode_envelope(unpack_raw(batch)[index])
        except (DecodeError, IndexError):
            return
        summary = repr(env.msg)[:200]
        log.error("dead letter: message set aside after crashing its receiver",
                  extra={"tag": env.msg.TAG, "attempts": attempts, "message_repr": summary})
        self.control.count(dead=1)
        self.transport.tell(self.boot.path.rsplit("/", 1)[0],
                            DeadLetter(self.boot.path, env.msg.TAG, attempts, summary))
        if env.reply_to:
            self.transport.reply(env.reply_to, env.corr,
                                 Reply(False, None, "DeadLetter", f"set aside: {summary}"))

    def decode(self, data: bytes) -> list[Envelope | None] | None:
        """The batch's envelopes; a malformed one is counted and stands as None, so it spoils
        only itself and the indexes in the control block stay those of the datagram."""
        try:
            raw = unpack_raw(data)
        except DecodeError as exc:
            self.malformed(exc)
            return None
        envelopes: list[Envelope | None] = []
        for item in raw:
            try:
                envelopes.append(decode_envelope(item))
            except DecodeError as exc:
                self.malformed(exc)
                envelopes.append(None)
        return envelopes

    def malformed(self, exc: DecodeError) -> None:
        self.control.count(malformed=1)
        log.warning("malformed mailbox frame dropped", extra={"error": str(exc)})

    def batch(self, data: bytes, start: int, attempts: int) -> Iterator[tuple[int, Envelope]]:
        """The messages of a held datagram to handle, from ``start``, with the control block
        kept current: the index in hand and a heartbeat before each, released after the last —
        once what the handlers told others has left."""
        if not data:
            self.malformed(DecodeError(f"a datagram over {MAX_FRAME_BYTES} bytes"))
        envelopes = self.decode(data) if data else None
        if envelopes is None:
            self.control.release()
            return
        self.held = len(data)
        for index in range(start, len(envelopes)):
            env = envelopes[index]
            if env is None:
                continue
            # What the previous message told others has been sent (unless its mailbox was full)
            # before the next one counts as in hand.
            self.control.at(self.held, index, attempts if index == start else 0)
            self.now = now = time.monotonic()
            self.control.beat(now)
            if env.deadline and now > env.deadline:
                self.control.count(expired=1)  # its asker has given up: nobody wants the answer
                continue
            yield index, env
            self.control.count(handled=1)  # once, by the incarnation that got through it
        self.control.release()

    def inject(self, fault: Fault, index: int) -> None:
        """Carry out a fault. The message is marked handled first, so it is not redelivered."""
        self.control.at(self.held, index + 1)
        log.warning("fault injected", extra={"fault": fault.kind})
        if fault.kind == "crash":
            os._exit(EXIT_FAULT)
        if fault.kind == "exit":
            os._exit(0)
        if fault.kind == "hang":
            while True:
                time.sleep(3600)
        if fault.kind == "stall":
            while True:
                ctypes.PyDLL(None).sleep(3600)  # PyDLL: the call keeps the GIL
        raise FaultInjected(f"fault injected in {self.boot.path}")

    def answered(self, env: Envelope, result: Any) -> None:
        if env.reply_to:
            self.transport.reply(env.reply_to, env.corr, reply_for(result))

    def failed(self, env: Envelope, exc: Exception) -> None:
        """An ask gets its error back; a peer's bad input is counted; anything else crashes."""
        if env.reply_to:
            self.transport.reply(env.reply_to, env.corr,
                                 Reply(False, None, type(exc).__name__, str(exc)))
            return
        if isinstance(exc, PeerError):
            self.control.count(malformed=1)
            log.warning("message refused", extra={"error": str(exc)})
            return
        log.exception("handler crashed", extra={"message_repr": repr(env.msg)[:200]})
        try:
            self.actor.on_failure(exc)
        finally:
            self.crash(f"{type(exc).__name__}: {exc}")

    def crash(self, reason: str) -> None:
        try:
            self.boot.status.send(("failed", reason))
        finally:
            os._exit(EXIT_CRASHED)


class BlockingRunner(Runner):
    def run(self) -> int:
        self.transport = SyncTransport(self.boot.rundir,
                                       waiting=lambda: self.control.beat(time.monotonic()))
        self.actor = self.cls(self.context())
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        self.control.beat(time.monotonic())
        self.actor.on_start()
        self.ready()
        if (held := self.resume()) is not None:
            self.handle(*held)
        mbox = self.boot.mailbox
        while not self.stopping:
            self.control.beat(time.monotonic())
            try:
                readable, _, _ = select.select([mbox], [], [], BEAT)
            except InterruptedError:
                continue
            if readable and (data := self.inbox.take()) is not None:
                self.handle(data, 0, 0)
        self.actor.on_stop()
        return 0

    def handle(self, data: bytes, start: int, attempts: int) -> None:
        for index, env in self.batch(data, start, attempts):
            try:
                if isinstance(env.msg, Fault):
                    self.inject(env.msg, index)
                self.answered(env, self.actor.on_receive(env.msg))
            except Exception as exc:
                self.failed(env, exc)
            assert isinstance(self.transport, SyncTransport)
            self.transport.try_flush()


async def settle(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value
