"""Running a tree: the root process (``run_root``) and a nested supervisor's process
(``run_nested``), with the mailbox thread that serves a supervisor's control API.

The root creates the run directory and, once, every mailbox and control block of the whole tree,
so they outlive a restart of any actor or subtree below it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pykka

from actors import logs
from actors.child import Boot
from actors.control import ControlBlock
from actors.mailbox import bind_mailbox, mailbox_file
from actors.spec import ChildSpec, SocketSpec, SupervisorSpec, walk
from actors.supervisor import EXIT_ESCALATED, Supervisor
from messages.codec import MAX_FRAME_BYTES, unpack_batch
from messages.errors import DecodeError, P2PError
from messages.runtime import (
    DeadLetter,
    Reply,
    RestartChild,
    StopChild,
    Subscribe,
    TreeEvent,
    TreeRequest,
)

log = logging.getLogger("actors.tree")

# Imported once by the fork server, so a restarted actor starts in milliseconds rather than
# re-importing them (aioquic and cryptography take ~300 ms). "__main__" too: otherwise every
# child re-imports the main script (and all it imports) before it can start.
PRELOAD = ["actors.forkserver_setup", "__main__", "actors.child", "actors.runner",
           "actors.async_runner", "messages.catalog", "msgpack", "asyncio", "uvloop"]


@dataclass
class Tree:
    rundir: str
    mailboxes: dict[str, socket.socket]
    parent: str = ""  # path of the supervisor above this process's, if any
    log_level: int = logging.INFO
    pid: int = field(default_factory=os.getpid)
    started_at: float = field(default_factory=time.monotonic)
    bound: dict[str, dict[str, socket.socket]] = field(default_factory=dict)
    # Paths that get this supervisor's tree events. Written by the control thread (so a child may
    # subscribe while its supervisor is still busy starting it), read by the supervisor actor.
    subscribers: list[str] = field(default_factory=list)

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


def create_tree(spec: SupervisorSpec, rundir: str | None) -> Tree:
    if rundir is None:
        reap_stale_rundirs(_tmp())
        rundir = tempfile.mkdtemp(prefix=RUNDIR_PREFIX, dir=_tmp())
    os.makedirs(rundir, exist_ok=True)
    with open(os.path.join(rundir, OWNER_FILE), "w") as f:
        f.write(str(os.getpid()))
    paths = [spec.name] + [p for p, _ in walk(spec)]
    tree = Tree(rundir, {p: bind_mailbox(mailbox_file(rundir, p)) for p in paths})
    for path in paths:
        ControlBlock(tree.control_file(path), create=True).close()
    return tree


RUNDIR_PREFIX = "p2p-"
OWNER_FILE = "root.pid"


def reap_stale_rundirs(parent: str) -> None:
    """Remove the run directories of roots that died without cleaning up (kill -9): their
    mailboxes and control blocks would otherwise stay in memory (tmpfs) for good."""
    for name in os.listdir(parent):
        rundir = os.path.join(parent, name)
        if not name.startswith(RUNDIR_PREFIX):
            continue
        try:
            with open(os.path.join(rundir, OWNER_FILE)) as f:
                owner = int(f.read())
        except (OSError, ValueError):
            continue  # not ours, or still being created
        if not os.path.exists(f"/proc/{owner}"):
            log.info("removing the run directory of a dead tree", extra={"rundir": rundir,
                                                                         "pid": owner})
            shutil.rmtree(rundir, ignore_errors=True)


def _tmp() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else "/tmp"


def context(preload: list[str]) -> multiprocessing.context.BaseContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD + preload)
    return ctx


def run_root(spec: SupervisorSpec, *, rundir: str | None = None, preload: Sequence[str] = (),
             log_level: int = logging.INFO, on_ready: Any = None) -> int:
    """Run ``spec`` as the root of a tree until SIGINT/SIGTERM or escalation; the exit code."""
    logs.configure(log_level, spec.name)
    tree = create_tree(spec, rundir)
    tree.log_level = log_level
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        return _supervise(spec, tree, context([*preload, *all_preloads(spec)]), None, stop,
                          on_ready)
    finally:
        shutil.rmtree(tree.rundir, ignore_errors=True)


def run_nested(boot: Boot) -> int:
    spec = boot.spec
    assert isinstance(spec, SupervisorSpec)
    mailboxes = dict(boot.mailboxes)
    mailboxes[boot.path] = boot.mailbox
    tree = Tree(boot.rundir, mailboxes, parent=boot.path.rsplit("/", 1)[0],
                log_level=boot.log_level)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return _supervise(spec, tree, context(all_preloads(spec)), boot, stop, None, path=boot.path)


def all_preloads(spec: SupervisorSpec) -> list[str]:
    """What this supervisor's fork server should import: its own and its subtree's preloads."""
    found = list(spec.preload)
    for _, node in walk(spec):
        if isinstance(node, SupervisorSpec):
            found.extend(m for m in node.preload if m not in found)
    return found


def _supervise(spec: SupervisorSpec, tree: Tree, ctx: Any, boot: Boot | None,
               stop: threading.Event, on_ready: Any, path: str = "") -> int:
    path = path or spec.name
    control = ControlBlock(boot.control_file) if boot else None
    if control:
        control.beat(time.monotonic())
    sup = Supervisor.start(path, spec, tree, ctx, control).proxy()
    done: threading.Event = sup.done.get()
    threading.Thread(target=serve_control, args=(tree.mailboxes[path], sup, tree),
                     name="control", daemon=True).start()
    try:
        failure = sup.start_all().get()
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
            sup.stop_all().get()
        code = sup.exit_code.get()
        if code == EXIT_ESCALATED:
            log.error(f"supervisor {path} exits: restart intensity exceeded, escalating")
            if boot:
                boot.status.send(("failed", "restart intensity exceeded"))
            return EXIT_ESCALATED if boot else 1
        return 0
    finally:
        pykka.ActorRegistry.stop_all()


def serve_control(mailbox: socket.socket, sup: Any, tree: Tree) -> None:
    """The supervisor's mailbox: its control API and what its children report."""
    transport = sup.transport.get()
    mailbox.settimeout(0.5)
    while True:
        try:
            data = mailbox.recv(MAX_FRAME_BYTES + 1)
        except TimeoutError:
            continue
        except OSError:
            return
        try:
            envelopes = unpack_batch(data)
        except DecodeError as exc:
            log.warning("malformed control frame dropped", extra={"error": str(exc)})
            continue
        for env in envelopes:
            try:
                result = control_request(sup, env.msg)
                reply = Reply(True, result)
            except (P2PError, pykka.ActorDeadError) as exc:
                reply = Reply(False, None, type(exc).__name__, str(exc))
            except Exception as exc:  # a bug must not silence the control API
                log.exception("control request failed", extra={"message_repr": repr(env.msg)[:120]})
                reply = Reply(False, None, type(exc).__name__, str(exc))
            if env.reply_to:
                transport.reply(env.reply_to, env.corr, reply)


def control_request(sup: Any, msg: Any) -> Any:
    if isinstance(msg, TreeRequest):
        return sup.snapshot().get(timeout=10)
    if isinstance(msg, RestartChild):
        return sup.restart_child(msg.path).get(timeout=60)
    if isinstance(msg, StopChild):
        return sup.stop_child(msg.path).get(timeout=60)
    if isinstance(msg, Subscribe):
        subscribers = sup.tree.get(timeout=5).subscribers
        if msg.path not in subscribers:
            subscribers.append(msg.path)
        return None
    if isinstance(msg, TreeEvent):
        return sup.relay(msg).get(timeout=5)
    if isinstance(msg, DeadLetter):
        return sup.publish("dead_letter", msg.path, 0,
                           f"after {msg.attempts} attempts: {msg.summary}").get(timeout=5)
    raise DecodeError(f"a supervisor does not handle {type(msg).__name__}")
