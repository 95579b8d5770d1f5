"""A supervisor's mailbox: its control API, and what its children and subtree report.

One thread reads the mailbox. Quick requests (a snapshot, a subscription, an event to relay) are
answered on it; a restart or stop is handed to the supervisor as a job and answered when the job
ends, and a request for a deeper path is forwarded to the nested supervisor on a thread of its
own, so no request waits behind another.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from concurrent.futures import Future
from typing import Any

import pykka

from actors.transport import SyncTransport
from messages.codec import MAX_FRAME_BYTES, Envelope, unpack_batch
from messages.errors import (
    ActorError,
    DecodeError,
    NoSuchActor,
    P2PError,
    RemoteError,
    UsageError,
)
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

SUBTREE_TIMEOUT = 2.0  # seconds a nested supervisor has to answer for its subtree
JOB_TIMEOUT = 120.0  # a restart or stop: the child's shutdown and start timeouts, and more


def serve_control(mailbox: socket.socket, sup: Any, rundir: str) -> None:
    transport = SyncTransport(rundir)  # its own: its asks never hold up the supervisor's tells
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
            if env.deadline and time.monotonic() > env.deadline:
                log.debug("control request expired", extra={"message_repr": repr(env.msg)[:80]})
                continue  # its asker has given up: carrying it out now would surprise them
            answer(transport, env, lambda env=env: control_request(sup, transport, env))


def answer(transport: Any, env: Envelope, work: Any) -> None:
    """Run ``work``; reply with its value now, or when the Future it returns is done."""
    try:
        result = work()
    except (P2PError, pykka.ActorDeadError) as exc:
        return _reply(transport, env, Reply(False, None, type(exc).__name__, str(exc)))
    except Exception as exc:  # a bug must not silence the control API
        log.exception("control request failed", extra={"message_repr": repr(env.msg)[:120]})
        return _reply(transport, env, Reply(False, None, type(exc).__name__, str(exc)))
    if isinstance(result, Future):
        result.add_done_callback(lambda f: _reply(transport, env, _settled(f)))
    else:
        _reply(transport, env, Reply(True, result))


def _settled(future: Future[Any]) -> Reply:
    exc = future.exception()
    if isinstance(exc, RemoteError):  # a nested supervisor's answer, passed on as it was
        return Reply(False, None, exc.remote_type, exc.remote_reason)
    if exc is not None:
        return Reply(False, None, type(exc).__name__, str(exc))
    return Reply(True, future.result())


def _reply(transport: Any, env: Envelope, reply: Reply) -> None:
    if env.reply_to:
        try:
            transport.reply(env.reply_to, env.corr, reply)
        except OSError as exc:  # out of descriptors, say: this request goes unanswered, not all
            log.warning("control reply failed", extra={"error": str(exc)})


def control_request(sup: Any, transport: Any, env: Envelope) -> Any:
    msg = env.msg
    if isinstance(msg, TreeRequest):
        return snapshot(sup, transport)
    if isinstance(msg, (RestartChild, StopChild)):
        via, refused = sup.route(msg.path).get(timeout=5)
        if refused:
            raise NoSuchActor(refused)
        if via:
            return forward(transport, via, msg)
        job = sup.restart_child if isinstance(msg, RestartChild) else sup.stop_child
        return job(msg.path).get(timeout=5)
    if isinstance(msg, Subscribe):
        if refused := sup.subscribe(msg.path).get(timeout=5):
            raise UsageError(refused)
        return None
    if isinstance(msg, TreeEvent):
        return sup.relay(msg).get(timeout=5)
    if isinstance(msg, DeadLetter):
        return sup.dead_lettered(msg.path, msg.attempts, msg.summary).get(timeout=5)
    raise DecodeError(f"a supervisor does not handle {type(msg).__name__}")


def snapshot(sup: Any, transport: Any) -> list[dict[str, Any]]:
    """This supervisor's nodes, each running nested supervisor's subtree spliced in."""
    nodes: list[dict[str, Any]] = []
    for node in sup.snapshot().get(timeout=5):
        nodes.append(node)
        if node["kind"] == "supervisor" and node["state"] == "running" and nodes[0] is not node:
            try:
                below = transport.ask(node["path"], TreeRequest(), timeout=SUBTREE_TIMEOUT)
            except ActorError:
                continue
            nodes.extend(n for n in below if n["path"] != node["path"])
    return nodes


def forward(transport: Any, via: str, msg: Any) -> Future[Any]:
    """Ask the nested supervisor ``via`` on a thread of its own; the answer comes as a Future."""
    done: Future[Any] = Future()

    def ask() -> None:
        own = SyncTransport(transport.rundir)
        try:
            done.set_result(own.ask(via, msg, timeout=JOB_TIMEOUT))
        except Exception as exc:
            done.set_exception(exc)
        finally:
            own.close()

    threading.Thread(target=ask, name=f"forward-{via}", daemon=True).start()
    return done
