"""The supervisor: starts its children in order, restarts them by OTP's rules, answers control
requests, and publishes tree events.

The decision-maker is a pykka ``ThreadingActor``: exits and ticks (from the watchdog thread),
control requests (from the control thread), the owners' reports and timers all arrive as
messages to it, so its state is touched by one thread only — and that thread never blocks. Work
that waits on a process (start and wait for ready, stop and wait for the exit) is a *job*, done by
the child's ``ChildOwner`` on its own thread; jobs run one at a time, in order, from ``jobs``, and
each one's end comes back as a message. So a slow start or stop delays the jobs queued behind it,
never the heartbeat, an exit, or a snapshot.

Each child's state moves only through ``TRANSITIONS``::

    STOPPED ──start──► STARTING ──ready──► RUNNING ──exit──► STOPPED
       ▲  │                │                  │
       │  └─wait─► WAITING │failed            └──stop──► STOPPING ──stopped──► STOPPED
       │           │  │    ▼
       └──cancel───┘  └─start─► STARTING      (failed: STARTING ──► STOPPED)
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from enum import Enum
from multiprocessing.context import BaseContext
from typing import Any

import pykka

from actors.boot import EXIT_ESCALATED
from actors.control import ControlBlock
from actors.owner import (
    ChildOwner,
    Exited,
    Launch,
    Launched,
    Terminate,
    Terminated,
    Tick,
    Watchdog,
)
from actors.spec import ChildSpec, SupervisorSpec
from actors.strategy import Escalate, Ignore, RestartChildren, RestartPlan
from actors.transport import SyncTransport
from messages.errors import ActorError, IllegalTransition, NoSuchActor
from messages.runtime import TreeEvent

log = logging.getLogger("actors.supervisor")


class State(Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    WAITING = "waiting"  # to be restarted once its backoff delay is over


TRANSITIONS: dict[tuple[State, str], State] = {
    (State.STOPPED, "start"): State.STARTING,
    (State.WAITING, "start"): State.STARTING,
    (State.STARTING, "ready"): State.RUNNING,
    (State.STARTING, "failed"): State.STOPPED,
    (State.RUNNING, "exit"): State.STOPPED,
    (State.RUNNING, "stop"): State.STOPPING,
    (State.STOPPING, "stopped"): State.STOPPED,
    (State.STOPPED, "wait"): State.WAITING,
    (State.WAITING, "cancel"): State.STOPPED,
}


@dataclass
class Child:
    name: str
    path: str
    spec: ChildSpec | SupervisorSpec
    owner: pykka.ActorRef[Any]
    control: ControlBlock
    state: State = State.STOPPED
    pid: int = 0
    restarts: int = 0
    started_at: float = 0.0
    last_exit: str = ""

    def transition(self, event: str) -> None:
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise IllegalTransition(f"{self.path}: {event!r} in state {self.state.value}")
        log.debug("child state", extra={"path": self.path, "change": f"{self.state.value} -> "
                                                                     f"{new.value}"})
        self.state = new


@dataclass
class Job:
    """One thing that waits on a process: ``start`` (why: start, restart, restart requested) or
    ``stop``; ``done`` is completed with the outcome for whoever asked."""

    kind: str
    name: str
    why: str = ""
    not_before: float = 0.0
    done: Future[str] | None = None


@dataclass(frozen=True)
class Wake:
    """A backoff delay is over."""


@dataclass
class Subscriber:
    path: str
    dropped: int = 0


SUBSCRIBER_BACKLOG = 0.0  # seconds a tree event may wait for a subscriber's full mailbox: none


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
        self.watchdog = Watchdog(self.actor_ref)
        self.children = {c.name: self._child(c, context) for c in spec.children}
        self.jobs: deque[Job] = deque()
        self.current: Job | None = None
        self.timer: threading.Timer | None = None
        self.subscribers: dict[str, Subscriber] = {}
        self.done = threading.Event()
        self.exit_code = 0
        self.starting: Future[str] | None = None  # start_all's outcome
        self.stopping: Future[str] | None = None  # stop_all's or an escalation's end

    def _child(self, spec: ChildSpec | SupervisorSpec, context: BaseContext) -> Child:
        path = f"{self.path}/{spec.name}"
        boot = self.tree.boot_fields(path, spec)
        owner = ChildOwner.start(spec.name, path, spec, boot, context, self.watchdog,
                                 self.actor_ref)
        return Child(spec.name, path, spec, owner, ControlBlock(boot["control_file"]))

    # -- lifecycle (called through the proxy; each returns a Future to wait on) --
    def start_all(self) -> Future[str]:
        """Start every child in order: '' once all are running, or why the start failed."""
        threading.Thread(target=self.watchdog.run, name="watchdog", daemon=True).start()
        self.starting = Future()
        self.jobs.extend(Job("start", name, "start") for name in self.children)
        self._next_job()
        return self.starting

    def stop_all(self) -> Future[str]:
        return self._shut_down(0, "stop requested")

    def _shut_down(self, code: int, why: str) -> Future[str]:
        """Stop every child in reverse order, then report done with ``code``."""
        if self.stopping is None:
            self.stopping = Future()
            self.exit_code = code
            self.jobs.clear()
            if self.timer is not None:
                self.timer.cancel()
            for c in self.children.values():
                if c.state is State.WAITING:
                    c.transition("cancel")
            self.jobs.extend(Job("stop", name, why) for name in reversed(self.children))
            self.jobs.append(Job("end", ""))
            self._next_job()
        return self.stopping

    # -- messages ----------------------------------------------------------------------------------
    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Tick):
            if self.control is not None:
                self.control.beat(time.monotonic())
            self.transport.try_flush()
        elif isinstance(message, Exited):
            self._exited(message)
        elif isinstance(message, Launched):
            self._launched(message)
        elif isinstance(message, Terminated):
            self._terminated(message)
        elif isinstance(message, Wake):
            self.timer = None
            self._next_job()
        return None

    def on_stop(self) -> None:
        self.watchdog.stopped.set()
        if self.timer is not None:
            self.timer.cancel()

    # -- jobs --------------------------------------------------------------------------------------
    def _next_job(self) -> None:
        self._run_jobs()
        # The tree's start is over once no first start is pending (a child stopped by hand
        # meanwhile counts as done: it was started, then stopped).
        if (self.starting is not None and not self.starting.done()
                and not (self.current is not None and self.current.why == "start")
                and not any(job.why == "start" for job in self.jobs)):
            self.starting.set_result("")

    def _run_jobs(self) -> None:
        while self.current is None and self.jobs and self.timer is None:
            job = self.jobs[0]
            if job.kind == "end":
                self._end()
                return
            wait = job.not_before - time.monotonic()
            if wait > 0:
                self.timer = threading.Timer(wait, self.actor_ref.tell, args=(Wake(),))
                self.timer.daemon = True
                self.timer.start()
                return
            self.jobs.popleft()
            self._begin(job)

    def _begin(self, job: Job) -> None:
        c = self.children[job.name]
        if job.kind == "start" and c.state in (State.STOPPED, State.WAITING):
            c.transition("start")
            self.current = job
            c.owner.tell(Launch())
        elif job.kind == "stop" and c.state is State.RUNNING:
            c.transition("stop")
            self.current = job
            c.owner.tell(Terminate())
        else:  # nothing to do: already stopped, or already running
            if job.kind == "stop" and c.state is State.WAITING:
                c.transition("cancel")
            self._finish(job, "stopped" if job.kind == "stop" else "running")

    def _finish(self, job: Job, outcome: str) -> None:
        if job.done is not None and not job.done.done():
            job.done.set_result(outcome)

    def _launched(self, msg: Launched) -> None:
        c, job = self.children[msg.name], self.current
        self.current = None
        if msg.ok:
            c.transition("ready")
            c.pid, c.started_at = msg.pid, time.monotonic()
            self.publish("started", c.path, c.pid, "")
            if job is not None and job.why != "start":
                self.publish("restarted", c.path, c.pid, job.why)
            outcome = "restarted" if job is not None and job.why != "start" else "running"
            if job is not None:
                self._finish(job, outcome)
        else:
            c.transition("failed")
            c.pid, c.last_exit = 0, msg.reason
            self.publish("start_failed", c.path, msg.pid, msg.reason)
            if job is not None:
                self._finish(job, f"failed: {msg.reason}")
            if self.starting is not None and not self.starting.done():
                self.starting.set_result(f"{c.path} failed to start: {msg.reason}")
                self._shut_down(0, "start failed")
                return
            # A restart that fails to start counts as another exit against the intensity.
            self._decide(self.plan.child_exited(c.name, True, time.monotonic()), c)
        self._next_job()

    def _terminated(self, msg: Terminated) -> None:
        c, job = self.children[msg.name], self.current
        self.current = None
        c.transition("stopped")
        c.last_exit = msg.reason
        self.publish("stopped", c.path, c.pid, msg.reason)
        c.pid = 0
        if job is not None:
            self._finish(job, "stopped")
        self._next_job()

    def _end(self) -> None:
        self.jobs.clear()
        self.watchdog.stopped.set()
        if self.stopping is not None and not self.stopping.done():
            self.stopping.set_result("stopped")
        if self.starting is not None and not self.starting.done():
            self.starting.set_result("stopped before every child was up")
        self.done.set()

    # -- exits -------------------------------------------------------------------------------------
    def _exited(self, msg: Exited) -> None:
        c = self.children[msg.name]
        if c.state is not State.RUNNING:
            return
        # A repeat crash on a message that already crashed an incarnation is on its way to
        # being a dead letter (bounded by MAX_ATTEMPTS): it is not charged to the intensity; the
        # first crash is refunded when the message is set aside (dead_lettered), so poison
        # messages, however many, never take the tree down.
        repeat = c.control.attempts_in_hand() > 0
        c.last_exit = self._ask_owner(c, msg.hang)
        c.transition("exit")
        abnormal = c.last_exit != "normal"
        self.publish("exited", c.path, c.pid, c.last_exit)
        c.pid = 0
        if self.stopping is not None:
            return
        self._decide(self.plan.child_exited(c.name, abnormal, time.monotonic(),
                                            charged=not repeat), c)
        self._next_job()

    def _ask_owner(self, c: Child, hang: str) -> str:
        # The process is already dead: collecting its status is a join that returns at once.
        return str(c.owner.proxy().exited(hang).get(timeout=10))

    def _decide(self, decision: Any, c: Child) -> None:
        if isinstance(decision, Ignore):
            return
        if isinstance(decision, Escalate):
            self.publish("escalated", self.path, 0, decision.reason)
            log.error("giving up: restart intensity exceeded", extra={"reason": decision.reason})
            self._shut_down(EXIT_ESCALATED, "escalated")
            return
        assert isinstance(decision, RestartChildren)
        for name in decision.stop:
            self.jobs.append(Job("stop", name, "sibling restart"))
        not_before = time.monotonic() + decision.delay
        for name in decision.start:
            if self.children[name].state is State.STOPPED and decision.delay:
                self.children[name].transition("wait")
            why = self.children[name].last_exit if name == c.name else f"{c.name} restarted"
            self.jobs.append(Job("start", name, why or "restart", not_before))
            self.children[name].restarts += 1

    # -- control API -------------------------------------------------------------------------------
    def snapshot(self) -> list[dict[str, Any]]:
        """This supervisor and its children (not their subtrees: the control thread asks
        nested supervisors itself, so this thread never waits on one)."""
        now = time.monotonic()
        nodes = [{"path": self.path, "kind": "supervisor", "pid": self.tree.pid, "state": "running",
                  "restarts": 0, "uptime": round(now - self.tree.started_at, 3), "last_exit": "",
                  "strategy": str(self.spec.strategy)}]
        for c in self.children.values():
            up = round(now - c.started_at, 3) if c.state is State.RUNNING else 0.0
            node = {"path": c.path, "kind": "supervisor" if isinstance(c.spec, SupervisorSpec)
                    else "actor", "pid": c.pid, "state": c.state.value, "restarts": c.restarts,
                    "uptime": up, "last_exit": c.last_exit}
            if isinstance(c.spec, ChildSpec):
                node.update(c.control.counters())
            nodes.append(node)
        return nodes

    def restart_child(self, path: str) -> Future[str]:
        c = self._direct(path)
        done: Future[str] = Future()
        self.plan.started_by_hand(c.name)
        c.restarts += 1
        self.jobs.append(Job("stop", c.name, "restart requested"))
        self.jobs.append(Job("start", c.name, "restart requested", done=done))
        self._next_job()
        return done

    def stop_child(self, path: str) -> Future[str]:
        c = self._direct(path)
        done: Future[str] = Future()
        self.plan.stopped_by_hand(c.name)
        self.jobs.append(Job("stop", c.name, "stop requested", done=done))
        self._next_job()
        return done

    def route(self, path: str) -> tuple[str, str]:
        """Which child handles a control request for ``path``: ('', '') for ourselves (a
        direct child), (the nested supervisor's path, ''), or ('', why not). Returned, not
        raised: a bad path is the caller's error, not a failure of this actor to log."""
        for c in self.children.values():
            if c.path == path:
                return "", ""
            if path.startswith(c.path + "/") and isinstance(c.spec, SupervisorSpec):
                return c.path, ""
        if not path.startswith(self.path + "/"):
            return "", f"{path} is not in the tree of {self.path}"
        return "", f"no actor at {path}"

    def _direct(self, path: str) -> Child:
        for c in self.children.values():
            if c.path == path:
                return c
        raise NoSuchActor(f"no actor at {path}")

    def dead_lettered(self, path: str, attempts: int, summary: str) -> None:
        """A child set a message aside: the first crash it caused is refunded (see
        ``RestartPlan.refund``), and the event is published."""
        if any(c.path == path for c in self.children.values()):
            self.plan.refund()
        self.publish("dead_letter", path, 0, f"after {attempts} attempts: {summary}")

    # -- tree events -------------------------------------------------------------------------------
    def subscribe(self, path: str) -> str:
        """'' once ``path`` gets this supervisor's events; why not, for a supervisor of this
        tree's own line (events already go up to it: they would circle for ever)."""
        if path == self.path or self.path.startswith(path + "/"):
            return f"{path} receives {self.path}'s events already"
        self.subscribers.setdefault(path, Subscriber(path))
        return ""

    def publish(self, kind: str, path: str, pid: int, reason: str) -> None:
        """Log a tree event and send it to the subscribers and up the tree."""
        quiet = kind in ("started", "stopped", "restarted")
        log.log(logging.INFO if quiet else logging.WARNING, f"tree {kind}",
                extra={"path": path, "pid": pid, "reason": reason})
        self.relay(TreeEvent(kind, path, pid, reason, time.time()))

    def relay(self, event: TreeEvent) -> None:
        """Send without waiting: a subscriber whose mailbox is full misses events (counted),
        one whose mailbox is gone is dropped, and neither ever stalls this thread."""
        if self.tree.parent:
            self._send(self.tree.parent, event)
        for sub in list(self.subscribers.values()):
            if not self._send(sub.path, event):
                sub.dropped += 1
                if sub.dropped in (1, 100) or sub.dropped % 10_000 == 0:
                    log.warning("tree events dropped for a slow subscriber",
                                extra={"subscriber": sub.path, "dropped": sub.dropped})

    def _send(self, target: str, event: TreeEvent) -> bool:
        try:
            self.transport.tell(target, event, deadline=SUBSCRIBER_BACKLOG)
        except NoSuchActor:
            if self.subscribers.pop(target, None) is not None:
                log.info("subscriber gone, dropped", extra={"subscriber": target})
            return True
        except ActorError:
            return False
        return True

