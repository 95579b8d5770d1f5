"""The runner of asyncio actors (the default): uvloop where installed, one message at a time.

Messages are handled in the mailbox's reader callback, with no task switch, for as long as
handlers return plain values. The callback stops and leaves the rest of its batch for later when

- a handler returns an awaitable: a task awaits it, then goes on with the batch;
- it has run for ``SLICE`` seconds: the loop's other work (sockets, timers, the heartbeat) runs,
  then the batch goes on.

Reading stays off meanwhile, so the actor still takes one message at a time, in order. What
each message told others is sent before the next one is taken; what a full mailbox cannot take
yet waits in this process (bounded: see ``actors.transport``) and never holds up reading. Waiting
for it instead would be backpressure, and a deadlock: two actors telling each other (udp and quic,
quic and ui), both mailboxes full, would each wait for the other — a soak run saw exactly that.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import time
from collections.abc import Coroutine, Iterator
from typing import Any

from actors.control import BEAT
from actors.runner import Runner, settle
from actors.transport import AsyncTransport
from messages.codec import Envelope
from messages.runtime import Fault

SLICE = 0.02  # seconds of handling before the loop gets a turn

log = logging.getLogger("actors.child")

Steps = Iterator[tuple[int, Envelope]]


class AsyncRunner(Runner):
    def run(self) -> int:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(self.serve())

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        self.transport = AsyncTransport(self.boot.rundir, loop)
        self.actor = self.cls(self.context())
        self.busy: asyncio.Task[None] | None = None
        self.slice_end = 0.0
        beating = loop.create_task(self.beat())
        await settle(self.actor.on_start())
        self.ready()
        if (held := self.resume()) is not None:
            await self.handle(*held)
        self.stopped: asyncio.Future[None] = loop.create_future()
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
    def reading(self, on: bool) -> None:
        loop, fd = asyncio.get_running_loop(), self.boot.mailbox.fileno()
        if on:
            loop.add_reader(fd, self.readable)
        else:
            loop.remove_reader(fd)

    def readable(self) -> None:
        self.slice_end = time.monotonic() + SLICE
        while self.busy is None:
            if self.stopping:
                self.reading(False)
                self.stop()
                return
            data = self.inbox.take()
            if data is None:
                return
            self.drive(self.batch(data, 0, 0))
            if self.now > self.slice_end:
                return  # the reader is level-triggered: it runs again after the loop's turn

    def drive(self, steps: Steps) -> None:
        """Handle a batch here and now as far as it can go; what must wait goes on in a task."""
        for index, env in steps:
            try:
                if isinstance(env.msg, Fault):
                    self.inject(env.msg, index)
                result = self.actor.on_receive(env.msg)
                if inspect.isawaitable(result):
                    self.pause(self.finish(steps, env, result))
                    return
                self.answered(env, result)
            except Exception as exc:  # the actor's own errors: see Runner.failed
                self.failed(env, exc)
            self.transport.flush()
            if self.now > self.slice_end:
                self.pause(self.go_on(steps, later=True))
                return

    def pause(self, rest: Coroutine[Any, Any, None]) -> None:
        self.reading(False)
        self.busy = asyncio.get_running_loop().create_task(rest)

    async def finish(self, steps: Steps, env: Envelope, pending: Any) -> None:
        try:
            self.answered(env, await pending)
        except Exception as exc:
            self.failed(env, exc)
        self.transport.flush()
        await self.go_on(steps)

    async def go_on(self, steps: Steps, later: bool = False) -> None:
        if later:
            await asyncio.sleep(0)
        self.busy = None
        self.slice_end = time.monotonic() + SLICE
        self.drive(steps)
        if self.busy is not None:
            return  # paused again: that task goes on from here
        if self.stopping:
            self.stop()
        else:
            self.reading(True)

    async def handle(self, data: bytes, start: int, attempts: int) -> None:
        """A batch left by a predecessor, before the mailbox is read."""
        # A dead letter's report leaves now: under uvloop, I/O callbacks run before call_soon
        # ones, so the next message (perhaps another poison) could crash us first.
        self.transport.flush()
        for index, env in self.batch(data, start, attempts):
            try:
                if isinstance(env.msg, Fault):
                    self.inject(env.msg, index)
                self.answered(env, await settle(self.actor.on_receive(env.msg)))
            except Exception as exc:  # the actor's own errors: see Runner.failed
                self.failed(env, exc)
            self.transport.flush()


def loop_factory() -> Any:
    """uvloop where it is installed (it comes with uvicorn[standard]): a mailbox round trip is
    a few event-loop iterations, and uvloop's are several times cheaper."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
