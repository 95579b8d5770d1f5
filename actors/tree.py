"""Running a tree: the root process (``run_root``) and what every supervisor process shares.

The root opens the run directory and binds, once, every mailbox and control block of the whole
tree, so they outlive a restart of any actor or subtree below it. A nested supervisor's process
runs ``actors.nested.run_nested``, which comes back here for ``supervise``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pykka

from actors.boot import EXIT_ESCALATED, Boot
from actors.control import ControlBlock
from actors.logs import configure
from actors.mailbox import bind_mailbox, mailbox_file
from actors.requests import serve_control
from actors.rundir import RunDir
from actors.spec import ChildSpec, SocketSpec, SupervisorSpec, walk
from actors.supervisor import Supervisor

log = logging.getLogger("actors.tree")

# Imported once by the fork server, so a restarted actor starts in milliseconds rather than
# re-importing them (aioquic and cryptography take ~300 ms). "__main__" too: otherwise every
# child re-imports the main script (and all it imports) before it can start.
PRELOAD = ["actors.forkserver_setup", "__main__", "actors.child", "actors.runner",
           "actors.async_runner", "actors.nested", "messages.catalog", "msgpack", "asyncio",
           "uvloop"]


@dataclass
class Tree:
    rundir: str
    mailboxes: dict[str, socket.socket]
    parent: str = ""  # path of the supervisor above this process's, if any
    log_level: int = logging.INFO
    pid: int = field(default_factory=os.getpid)
    started_at: float = field(default_factory=time.monotonic)
    bound: dict[str, dict[str, socket.socket]] = field(default_factory=dict)

    def control_file(self, path: str) -> str:
        return os.path.join(self.rundir, path.replace("/", ".") + ".ctl")

    def boot_fields(self, path: str, spec: ChildSpec | SupervisorSpec) -> dict[str, Any]:
        subtree = {p: s for p, s in self.mailboxes.items() if p.startswith(path + "/")}
        sockets = bind_sockets(spec.sockets) if isinstance(spec, ChildSpec) else {}
        self.bound[path] = sockets
        return {"rundir": self.rundir, "mailbox": self.mailboxes[path],
                "control_file": self.control_file(path), "sockets": sockets,
                "mailboxes": subtree if isinstance(spec, SupervisorSpec) else {},
                "log_level": self.log_level}


def bind_sockets(specs: dict[str, SocketSpec]) -> dict[str, socket.socket]:
    return {name: bind_socket(spec) for name, spec in specs.items()}


def bind_socket(spec: SocketSpec) -> socket.socket:
    family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
    kind = socket.SOCK_DGRAM if spec.kind == "udp" else socket.SOCK_STREAM
    sock = socket.socket(family, kind)
    if spec.kind == "tcp":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((spec.host, spec.port))
    if spec.kind == "tcp":
        sock.listen(4096)  # connection storms (thousands of workers at once); capped by somaxconn
    return sock


def create_tree(spec: SupervisorSpec, rundir: RunDir) -> Tree:
    paths = [spec.name] + [p for p, _ in walk(spec)]
    rundir.claim(paths)
    tree = Tree(rundir.path, {p: bind_mailbox(mailbox_file(rundir.path, p)) for p in paths})
    for path in paths:
        ControlBlock(tree.control_file(path), create=True).close()
    return tree


def context(preload: list[str]) -> multiprocessing.context.BaseContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD + preload)
    return ctx


def run_root(spec: SupervisorSpec, *, rundir: str | None = None, preload: Sequence[str] = (),
             log_level: int = logging.INFO, on_ready: Any = None) -> int:
    """Run ``spec`` as the root of a tree until SIGINT/SIGTERM or escalation; the exit code."""
    configure(log_level, spec.name)
    where = RunDir.open(rundir, spec.name)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        tree = create_tree(spec, where)
        tree.log_level = log_level
        return supervise(spec, tree, context([*preload, *all_preloads(spec)]), None, stop,
                         on_ready)
    finally:
        where.close()


def all_preloads(spec: SupervisorSpec) -> list[str]:
    """What this supervisor's fork server should import: its own and its subtree's preloads."""
    found = list(spec.preload)
    for _, node in walk(spec):
        if isinstance(node, SupervisorSpec):
            found.extend(m for m in node.preload if m not in found)
    return found


def supervise(spec: SupervisorSpec, tree: Tree, ctx: Any, boot: Boot | None,
              stop: threading.Event, on_ready: Any, path: str = "",
              control: ControlBlock | None = None) -> int:
    path = path or spec.name
    sup = Supervisor.start(path, spec, tree, ctx, control).proxy()
    done: threading.Event = sup.done.get()
    threading.Thread(target=serve_control, args=(tree.mailboxes[path], sup, tree.rundir),
                     name="control", daemon=True).start()
    try:
        starting = sup.start_all().get()
        while not starting.done():
            if stop.wait(0.05):  # a stop signal while the tree is still starting
                sup.stop_all().get().result()
                return 0
        failure = starting.result()
        if failure:
            log.error("tree failed to start", extra={"reason": failure})
            if boot:
                boot.status.send(("failed", failure))
            return 1
        if boot:
            boot.status.send(("ready", os.getpid()))
        elif on_ready:
            on_ready(tree)
        while not (stop.wait(0.05) or done.is_set()):
            pass
        if stop.is_set() and not done.is_set():
            sup.stop_all().get().result()
        if sup.exit_code.get() == EXIT_ESCALATED:
            log.error(f"supervisor {path} exits: restart intensity exceeded, escalating")
            if boot:
                boot.status.send(("failed", "restart intensity exceeded"))
            return EXIT_ESCALATED if boot else 1
        return 0
    finally:
        pykka.ActorRegistry.stop_all()
