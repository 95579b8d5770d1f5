"""The runner of asyncio actors (the default): uvloop where installed, one message at a time."""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import time
from collections.abc import Iterator
from typing import Any

from actors.control import BEAT
from actors.runner import Runner, settle
from actors.transport import AsyncTransport
from messages.codec import MAX_FRAME_BYTES, Envelope
from messages.runtime import Fault

READ_BURST = 16  # mailbox datagrams one reader callback handles before the loop runs others

log = logging.getLogger("actors.child")


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


def loop_factory() -> Any:
    """uvloop where it is installed (it comes with uvicorn[standard]): a mailbox round trip is
    a few event-loop iterations, and uvloop's are several times cheaper."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
