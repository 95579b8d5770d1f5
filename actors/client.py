"""Talking to a running tree from outside it: tests, benchmarks, the command line.

``Client(rundir)`` sends and asks like an actor would, and can subscribe to the tree events a
supervisor publishes.
"""

from __future__ import annotations

import select
import time
from collections.abc import Iterator
from typing import Any

from actors.mailbox import bind_mailbox, mailbox_file, private_address
from actors.transport import SyncTransport
from messages.codec import MAX_FRAME_BYTES, unpack_batch
from messages.runtime import RestartChild, StopChild, Subscribe, TreeEvent, TreeRequest


class Client:
    def __init__(self, rundir: str) -> None:
        self.transport = SyncTransport(rundir)
        self.rundir = rundir
        # In the abstract namespace: nothing left behind, and a supervisor notices when we are gone.
        self.inbox_path = private_address("client")
        self.inbox = bind_mailbox(mailbox_file(rundir, self.inbox_path))

    def tell(self, path: str, msg: Any) -> None:
        self.transport.tell(path, msg)

    def ask(self, path: str, msg: Any, timeout: float = 5.0) -> Any:
        return self.transport.ask(path, msg, timeout)

    def tree(self, root: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        return self.ask(root, TreeRequest(), timeout)

    def node(self, root: str, path: str) -> dict[str, Any]:
        return next(n for n in self.tree(root) if n["path"] == path)

    def restart(self, root: str, path: str) -> str:
        return self.ask(root, RestartChild(path), 60.0)

    def stop(self, root: str, path: str) -> str:
        return self.ask(root, StopChild(path), 60.0)

    def subscribe(self, root: str) -> None:
        self.ask(root, Subscribe(self.inbox_path))

    def events(self, timeout: float) -> Iterator[TreeEvent]:
        """Tree events as they arrive, until ``timeout`` seconds pass without one."""
        while True:
            ready, _, _ = select.select([self.inbox], [], [], timeout)
            if not ready:
                return
            for env in unpack_batch(self.inbox.recv(MAX_FRAME_BYTES)):
                if isinstance(env.msg, TreeEvent):
                    yield env.msg

    def wait_event(self, kind: str, path: str, timeout: float) -> TreeEvent:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            for event in self.events(left):
                if event.kind == kind and event.path == path:
                    return event
                if time.monotonic() > deadline:
                    break
        raise TimeoutError(f"no {kind} event for {path} within {timeout} s")

    def close(self) -> None:
        self.transport.close()
        self.inbox.close()
