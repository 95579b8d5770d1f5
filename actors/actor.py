"""The actor contract, after pykka's: ``on_start``, ``on_receive``, ``on_stop``, ``on_failure``.

An actor is a class with those hooks, run alone in its own OS process by ``actors.child``. Its
hooks may be plain functions or coroutines (asyncio actors, the default) — or, with
``blocking = True``, plain functions run on a thread with no event loop (for libraries that
block, such as pystun3).

- ``on_receive(msg)`` handles one message at a time, in mailbox order. Its return value answers an
  ``ask``. If it raises while handling an ``ask``, the error goes back to the asker and the actor
  carries on; if it raises a ``PeerError`` (bad input from someone else) it is logged and counted;
  if it raises anything else while handling a ``tell``, ``on_failure`` runs and the process exits:
  the supervisor restarts it and the message is delivered again (and set aside as a dead letter
  after ``MAX_ATTEMPTS`` crashes).
- ``on_start`` runs before the actor reports ready; ``on_stop`` on a graceful stop (SIGTERM).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from actors.transport import AsyncTransport, SyncTransport
from messages.errors import UnknownMessage


class Ref:
    """A reference to an actor by path. It holds no connection to an incarnation, so it keeps
    working across the target's restarts."""

    __slots__ = ("path", "transport")

    def __init__(self, path: str, transport: AsyncTransport | SyncTransport) -> None:
        self.path = path
        self.transport = transport

    def tell(self, msg: Any) -> None:
        self.transport.tell(self.path, msg)

    def ask(self, msg: Any, timeout: float = 5.0) -> Any:
        """In an asyncio actor: a coroutine to await. Blocking actors and clients: the value."""
        return self.transport.ask(self.path, msg, timeout)

    def __repr__(self) -> str:
        return f"Ref({self.path!r})"


@dataclass
class ActorContext:
    path: str
    rundir: str
    transport: AsyncTransport | SyncTransport
    config: dict[str, Any] = field(default_factory=dict)
    sockets: dict[str, Any] = field(default_factory=dict)
    spawner: Callable[[Any], Any] | None = None

    def spawn(self, coro: Any) -> Any:
        """Run ``coro`` as a background task of this actor; an error in it crashes the actor
        (``on_failure``, exit, restart) instead of dying unnoticed."""
        if self.spawner is None:
            raise TypeError("this actor cannot run background tasks")
        return self.spawner(coro)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def parent(self) -> Ref:
        return Ref(self.path.rsplit("/", 1)[0], self.transport)

    def ref(self, path: str) -> Ref:
        """A path relative to this actor's parent (``"quic"``) or absolute (``"worker/quic"``)."""
        if "/" not in path:
            path = f"{self.path.rsplit('/', 1)[0]}/{path}"
        return Ref(path, self.transport)


class Actor:
    blocking: ClassVar[bool] = False

    def __init__(self, ctx: ActorContext) -> None:
        self.ctx = ctx

    def on_start(self) -> Any:
        """Acquire resources; the actor is not ready (nor sent messages) before this returns."""

    def on_receive(self, msg: Any) -> Any:
        """Handle one message. A message it does not handle is the sender's error, not a
        crash: raising a ``PeerError`` (as here) is logged and counted, and the actor goes on."""
        raise UnknownMessage(f"{type(self).__name__} does not handle {type(msg).__name__}")

    def on_stop(self) -> Any:
        """Release resources on a graceful stop."""

    def on_failure(self, exc: BaseException) -> None:
        """Last words before the process exits on an unhandled error."""
