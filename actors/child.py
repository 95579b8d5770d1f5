"""The body of every actor process: watch the parent, load the actor, hand it to its runner
(``actors.async_runner`` or, for ``blocking`` actors, ``actors.runner``), exit with its code."""

from __future__ import annotations

import importlib
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from actors import logs
from actors.actor import Actor
from actors.spec import ChildSpec, SupervisorSpec

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
    from actors.async_runner import AsyncRunner
    from actors.runner import BlockingRunner

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
