"""The body of every actor process: watch the parent, start the actor, serve its mailbox.

Delivery rules (see docs/ARCHITECTURE.md): a mailbox datagram is copied into the control block
before its first message is handled and released after its last, with the index of the message in
hand kept current. An incarnation that dies mid-batch leaves the rest of the batch there; the next
one resumes at the message in hand and counts the attempt. After ``MAX_ATTEMPTS`` crashes on the
same message it is set aside as a dead letter, reported to the supervisor and logged.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from actors import logs
from actors.actor import Actor, ActorContext
from actors.control import BEAT, ControlBlock
from actors.spec import ChildSpec, SupervisorSpec
from actors.transport import AsyncTransport, SyncTransport, reply_for
from messages.codec import MAX_FRAME_BYTES, Envelope, decode_envelope, unpack_raw
from messages.errors import DecodeError, PeerError
from messages.runtime import DeadLetter, Fault, Reply

MAX_ATTEMPTS = 3  # crashes on one message before it becomes a dead letter
READ_BURST = 16  # mailbox datagrams one reader callback handles before the loop runs others
EXIT_CRASHED = 1
EXIT_ORPHANED = 3
EXIT_FAULT = 70

log = logging.getLogger("actors.child")


@dataclass
class Boot:
    """Everything a new incarnation needs; pickled to it by the forkserver/spawn context."""

    path: str
    spec: ChildSpec | SupervisorSpec
    rundir: str
    mailbox: socket.socket
    control_file: str
    death: Connection  # read end of a pipe from the supervisor; EOF means it died
    status: Connection  # write end: ("ready", pid) once started, ("failed", text) on a crash
    sockets: dict[str, socket.socket] = field(default_factory=dict)
    mailboxes: dict[str, socket.socket] = field(default_factory=dict)  # a nested tree's
    log_level: int = logging.INFO


class FaultInjected(RuntimeError):
    """Raised by the ``raise`` fault, as a handler bug would be."""


def main(boot: Boot) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the root's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the fork server ignores it; we must not
    watch_parent(boot.death)
    logs.configure(boot.log_level, boot.path)
    import messages.catalog  # noqa: F401  every tag known in every process
    if isinstance(boot.spec, SupervisorSpec):
        from actors.tree import run_nested

        leave(run_nested(boot))
    assert isinstance(boot.spec, ChildSpec)
    cls = load_actor(boot.spec.actor)
    runner = BlockingRunner(boot, cls) if cls.blocking else AsyncRunner(boot, cls)
    leave(runner.run())


def leave(code: int) -> None:
    """Exit at once: the supervisor is waiting, and nothing in multiprocessing's exit handlers
    is ours to wait for."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def watch_parent(death: Connection) -> None:
    """Exit as soon as the supervisor is gone, even if it was killed with SIGKILL: the write end
    of this pipe lives only in the supervisor, so its death closes it."""

    def wait() -> None:
        try:
            while True:
                death.recv_bytes()
        except (EOFError, OSError):
            os._exit(EXIT_ORPHANED)

    threading.Thread(target=wait, name="parent-watch", daemon=True).start()


def load_actor(target: str) -> type[Actor]:
    module, _, name = target.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise TypeError(f"{target} is not an Actor class")
    return cls


class Runner:
    def __init__(self, boot: Boot, cls: type[Actor]) -> None:
        self.boot = boot
        self.cls = cls
        self.control = ControlBlock(boot.control_file)
        self.stopping = False
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
        held = self.control.held()
        if held is None:
            return None
        batch, index, attempts = held
        attempts += 1
        if attempts >= MAX_ATTEMPTS:
            self.dead_letter(batch, index, attempts)
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
            raw = unpack_raw(data if len(data) <= MAX_FRAME_BYTES else b"")
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
        """The messages of a mailbox datagram to handle, from ``start``, with the control block
        kept current: held before the first, the index in hand as they go, released after the
        last — once what the handlers told others has left."""
        envelopes = self.decode(data)
        if envelopes is None:
            self.control.release()
            return
        if start == 0:
            self.control.hold(data)
        for index in range(start, len(envelopes)):
            env = envelopes[index]
            if env is not None:
                self.control.at(index, attempts if index == start else 0)
                yield index, env
        # A crash before this flush redelivers the input rather than losing its consequences.
        self.transport.flush()
        self.control.release()
        self.control.count(handled=len(envelopes) - start)

    def inject(self, fault: Fault, index: int) -> None:
        """Carry out a fault. The message is marked handled first, so it is not redelivered."""
        self.control.at(index + 1)
        log.warning("fault injected", extra={"fault": fault.kind})
        if fault.kind == "crash":
            os._exit(EXIT_FAULT)
        if fault.kind == "exit":
            os._exit(0)
        if fault.kind == "hang":
            while True:
                time.sleep(3600)
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


class AsyncRunner(Runner):
    def run(self) -> int:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(self.serve())

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        self.transport = AsyncTransport(self.boot.rundir, loop)
        self.actor = self.cls(self.context())
        beating = loop.create_task(self.beat())
        await settle(self.actor.on_start())
        self.ready()
        if (held := self.resume()) is not None:
            await self.handle(*held)
        self.stopped: asyncio.Future[None] = loop.create_future()
        self.busy: asyncio.Task[None] | None = None
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        self.boot.mailbox.setblocking(False)
        self.reading(True)
        await self.stopped
        self.reading(False)
        beating.cancel()
        await settle(self.actor.on_stop())
        self.transport.flush()
        return 0

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """A background task of the actor: if it dies of an error, the actor crashes with it
        (on_failure, then exit), as if a handler had raised."""
        task = asyncio.get_running_loop().create_task(coro)
        task.add_done_callback(self.task_done)
        return task

    def task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error("background task crashed", exc_info=exc)
        try:
            self.actor.on_failure(exc)  # type: ignore[arg-type]
        finally:
            self.crash(f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        """SIGTERM: finish the message in hand, then stop."""
        self.stopping = True
        if self.busy is None and not self.stopped.done():
            self.stopped.set_result(None)

    async def beat(self) -> None:
        while True:
            self.control.beat(time.monotonic())
            await asyncio.sleep(BEAT)

    # -- the mailbox ----------------------------------------------------------------------------
    # Messages are handled in the mailbox's reader callback, with no task switch, for as long as
    # handlers return plain values; a handler that returns an awaitable hands the rest of its
    # batch to a task and reading pauses until that task is done, so the actor still takes one
    # message at a time, in order. A callback reads at most READ_BURST datagrams, then lets the
    # loop run its other work (the heartbeat among it).

    def reading(self, on: bool) -> None:
        loop, fd = asyncio.get_running_loop(), self.boot.mailbox.fileno()
        if on:
            loop.add_reader(fd, self.readable)
        else:
            loop.remove_reader(fd)

    def readable(self) -> None:
        for _ in range(READ_BURST):
            if self.stopping:
                self.reading(False)
                self.stop()
                return
            try:
                data = self.boot.mailbox.recv(MAX_FRAME_BYTES + 1)
            except BlockingIOError:
                return
            if not self.run_batch(self.batch(data, 0, 0)):
                return

    def run_batch(self, steps: Iterator[tuple[int, Envelope]]) -> bool:
        """Handle a batch here and now; False if a handler's awaitable took the rest to a task."""
        for index, env in steps:
            try:
                if isinstance(env.msg, Fault):
                    self.inject(env.msg, index)
                result = self.actor.on_receive(env.msg)
                if inspect.isawaitable(result):
                    self.reading(False)
                    self.busy = asyncio.get_running_loop().create_task(
                        self.finish(steps, env, result))
                    return False
                self.answered(env, result)
            except Exception as exc:  # the actor's own errors: see Runner.failed
                self.failed(env, exc)
        return True

    async def finish(self, steps: Iterator[tuple[int, Envelope]], env: Envelope,
                     pending: Any) -> None:
        try:
            self.answered(env, await pending)
        except Exception as exc:
            self.failed(env, exc)
        await self.handle_steps(steps)
        self.busy = None
        if self.stopping:
            self.stop()
        else:
            self.reading(True)

    async def handle(self, data: bytes, start: int, attempts: int) -> None:
        await self.handle_steps(self.batch(data, start, attempts))

    async def handle_steps(self, steps: Iterator[tuple[int, Envelope]]) -> None:
        for index, env in steps:
            try:
                if isinstance(env.msg, Fault):
                    self.inject(env.msg, index)
                self.answered(env, await settle(self.actor.on_receive(env.msg)))
            except Exception as exc:  # the actor's own errors: see Runner.failed
                self.failed(env, exc)


class BlockingRunner(Runner):
    def run(self) -> int:
        self.transport = SyncTransport(self.boot.rundir)
        self.actor = self.cls(self.context())
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        self.control.beat(time.monotonic())
        self.actor.on_start()
        self.ready()
        if (held := self.resume()) is not None:
            self.handle(*held)
        mbox = self.boot.mailbox
        mbox.settimeout(BEAT)
        while not self.stopping:
            self.control.beat(time.monotonic())
            try:
                data = mbox.recv(MAX_FRAME_BYTES + 1)
            except (TimeoutError, InterruptedError):
                continue
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
            self.control.beat(time.monotonic())


def loop_factory() -> Any:
    """uvloop where it is installed (it comes with uvicorn[standard]): a mailbox round trip is
    a few event-loop iterations, and uvloop's are several times cheaper."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def settle(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value
