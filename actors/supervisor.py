"""The supervisor: starts its children in order, restarts them by OTP's rules, answers control
requests, and publishes tree events.

The decision-maker is a pykka ``ThreadingActor``: exits (from the watchdog thread), control
requests (from the mailbox thread) and timers all arrive as messages to it, so its state is
touched by one thread only. Each child's process is owned by a ``ChildOwner`` actor.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any

import pykka

from actors.control import ControlBlock
from actors.owner import ChildOwner, Watchdog
from actors.spec import ChildSpec, SupervisorSpec
from actors.strategy import Escalate, Ignore, RestartChildren, RestartPlan
from actors.transport import SyncTransport
from messages.errors import ActorError, UsageError
from messages.runtime import TreeEvent

log = logging.getLogger("actors.supervisor")

EXIT_ESCALATED = 2


@dataclass
class ChildState:
    name: str
    path: str
    spec: ChildSpec | SupervisorSpec
    owner: Any  # pykka proxy of the ChildOwner
    state: str = "starting"
    pid: int = 0
    restarts: int = 0
    started_at: float = 0.0
    last_exit: str = ""


class Supervisor(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(self, path: str, spec: SupervisorSpec, tree: Any, context: BaseContext,
                 control: ControlBlock | None) -> None:
        super().__init__()
        self.path, self.spec, self.tree = path, spec, tree
        self.transport = SyncTransport(tree.rundir)
        self.control = control  # our own heartbeat, when we are a child ourselves
        self.plan = RestartPlan([(c.name, c.restart) for c in spec.children], spec.strategy,
                                max_restarts=spec.max_restarts, period=spec.period,
                                backoff=spec.backoff, backoff_max=spec.backoff_max)
        self.done = threading.Event()
        self.exit_code = 0
        self.watchdog = Watchdog(self._report_exit, self._tick)
        self.children = {c.name: self._owner(c, context) for c in spec.children}
        self.timers: list[threading.Timer] = []

    def _owner(self, spec: ChildSpec | SupervisorSpec, context: BaseContext) -> ChildState:
        path = f"{self.path}/{spec.name}"
        owner = ChildOwner.start(spec.name, path, spec, self.tree.boot_fields(path, spec),
                                 context, self.watchdog).proxy()
        return ChildState(spec.name, path, spec, owner)

    # -- lifecycle ------------------------------------------------------------------------------
    def start_all(self) -> str:
        """Start every child in order; on the first failure stop the rest: '' or the reason."""
        threading.Thread(target=self.watchdog.run, name="watchdog", daemon=True).start()
        for st in self.children.values():
            ok, reason = self._start_child(st)
            if not ok:
                self._stop_children()
                return f"{st.path} failed to start: {reason}"
        return ""

    def stop_all(self) -> None:
        self._stop_children()
        self.exit_code = 0
        self.done.set()

    def _start_child(self, st: ChildState) -> tuple[bool, str]:
        st.state = "starting"
        ok, pid, reason = st.owner.launch().get()
        st.pid, st.started_at = pid, time.monotonic()
        st.state = "running" if ok else "failed"
        self.publish("started" if ok else "start_failed", st.path, pid, reason)
        return ok, reason

    def _stop_child(self, st: ChildState) -> None:
        if st.state in ("running", "starting"):
            st.state = "stopping"
            st.last_exit = st.owner.terminate().get()
            self.publish("stopped", st.path, st.pid, st.last_exit)
        st.state, st.pid = "stopped", 0

    def _stop_children(self) -> None:
        for t in self.timers:
            t.cancel()
        self.watchdog.stopped.set()
        for st in reversed(list(self.children.values())):
            self._stop_child(st)

    # -- exits ----------------------------------------------------------------------------------
    def _report_exit(self, name: str, number: int, hang: str) -> None:
        self.actor_ref.tell(("exited", name, hang))

    def _tick(self) -> None:
        self.actor_ref.tell(("tick",))

    def on_receive(self, message: Any) -> Any:
        kind = message[0]
        if kind == "tick" and self.control is not None:
            self.control.beat(time.monotonic())
        elif kind == "exited":
            self._exited(message[1], message[2])
        elif kind == "start_later":
            self._restart_now(message[1])
        return None

    def _exited(self, name: str, hang: str) -> None:
        st = self.children[name]
        if st.state != "running":
            return
        st.last_exit = st.owner.exited(hang).get()
        st.state = "exited"
        abnormal = st.last_exit != "normal"
        self.publish("exited", st.path, st.pid, st.last_exit)
        self._decide(self.plan.child_exited(name, abnormal, time.monotonic()), st)

    def _decide(self, decision: Any, st: ChildState) -> None:
        if isinstance(decision, Ignore):
            st.state = "stopped"
            return
        if isinstance(decision, Escalate):
            self.publish("escalated", self.path, 0, decision.reason)
            log.error("giving up: restart intensity exceeded", extra={"reason": decision.reason})
            self._stop_children()
            self.exit_code = EXIT_ESCALATED
            self.done.set()
            return
        assert isinstance(decision, RestartChildren)
        for name in decision.stop:
            self._stop_child(self.children[name])
        for name in decision.start:
            self.children[name].state = "restarting"
        if decision.delay:
            timer = threading.Timer(decision.delay, self.actor_ref.tell,
                                    args=(("start_later", decision.start),))
            self.timers.append(timer)
            timer.start()
        else:
            self._restart_now(decision.start)

    def _restart_now(self, names: tuple[str, ...]) -> None:
        for name in names:
            st = self.children[name]
            if st.state != "restarting":
                continue
            st.restarts += 1
            ok, reason = self._start_child(st)
            if ok:
                self.publish("restarted", st.path, st.pid, st.last_exit)
            else:
                st.state = "running"  # let the exit path count it against the intensity
                self._exited(name, reason)

    # -- control API ----------------------------------------------------------------------------
    def snapshot(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        nodes = [{"path": self.path, "kind": "supervisor", "pid": self.tree.pid, "state": "running",
                  "restarts": 0, "uptime": round(now - self.tree.started_at, 3), "last_exit": "",
                  "strategy": str(self.spec.strategy)}]
        for st in self.children.values():
            nodes.append(self._node(st, now))
            if isinstance(st.spec, SupervisorSpec) and st.state == "running":
                nodes.extend(self._subtree(st))
        return nodes

    def _node(self, st: ChildState, now: float) -> dict[str, Any]:
        up = round(now - st.started_at, 3) if st.state == "running" else 0.0
        node = {"path": st.path, "kind": "supervisor" if isinstance(st.spec, SupervisorSpec)
                else "actor", "pid": st.pid, "state": st.state, "restarts": st.restarts,
                "uptime": up, "last_exit": st.last_exit}
        if isinstance(st.spec, ChildSpec):
            node.update(ControlBlock(self.tree.control_file(st.path)).counters())
        return node

    def _subtree(self, st: ChildState) -> list[dict[str, Any]]:
        from messages.runtime import TreeRequest

        try:
            nodes = self.transport.ask(st.path, TreeRequest(), timeout=2.0)
        except ActorError:
            return []
        return [n for n in nodes if n["path"] != st.path]

    def restart_child(self, path: str) -> str:
        st = self._direct(path)
        if st is None:
            return self._forward(path, "restart")
        self._stop_child(st)
        self.plan.started_by_hand(st.name)
        st.restarts += 1
        ok, reason = self._start_child(st)
        if ok:
            self.publish("restarted", st.path, st.pid, "restart requested")
        return "restarted" if ok else f"failed: {reason}"

    def stop_child(self, path: str) -> str:
        st = self._direct(path)
        if st is None:
            return self._forward(path, "stop")
        self.plan.stopped_by_hand(st.name)
        self._stop_child(st)
        return "stopped"

    def _direct(self, path: str) -> ChildState | None:
        for st in self.children.values():
            if st.path == path:
                return st
        if not path.startswith(self.path + "/"):
            raise UsageError(f"{path} is not in the tree of {self.path}")
        return None

    def _forward(self, path: str, what: str) -> str:
        from messages.runtime import RestartChild, StopChild

        for st in self.children.values():
            if path.startswith(st.path + "/") and isinstance(st.spec, SupervisorSpec):
                msg = RestartChild(path) if what == "restart" else StopChild(path)
                return str(self.transport.ask(st.path, msg, timeout=30.0))
        raise UsageError(f"no actor at {path}")

    def publish(self, kind: str, path: str, pid: int, reason: str) -> None:
        """Log a tree event and send it to the subscribers and up the tree."""
        quiet = kind in ("started", "stopped", "restarted")
        log.log(logging.INFO if quiet else logging.WARNING, f"tree {kind}",
                extra={"path": path, "pid": pid, "reason": reason})
        self.relay(TreeEvent(kind, path, pid, reason, time.time()))

    def relay(self, event: TreeEvent) -> None:
        targets = list(self.tree.subscribers)
        if self.tree.parent:
            targets.append(self.tree.parent)
        for target in targets:
            try:
                self.transport.tell(target, event, deadline=0.5)
            except ActorError:
                log.debug("event subscriber unreachable", extra={"subscriber": target})
