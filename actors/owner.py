"""The supervisor's side of one child: its process, from start to exit.

``ChildOwner`` is a pykka ``ThreadingActor``. Starting a child waits for its "ready" and stopping
one waits up to its shutdown timeout before SIGKILL; those waits happen on the owner's own thread,
and the owner *tells* the supervisor when they are over (``Launched``, ``Terminated``), so the
supervisor's thread never blocks on a child. ``Watchdog`` is a thread that notices exits (process
sentinels) and hangs (stale heartbeats) of every running child and tells the supervisor.
"""

from __future__ import annotations

import logging
import multiprocessing.connection as mpc
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from typing import Any

import pykka

from actors import child
from actors.boot import STATUS_LOST, Boot, exit_reason
from actors.control import ControlBlock
from actors.spec import ChildSpec, SupervisorSpec

log = logging.getLogger("actors.supervisor")

WATCH_TICK = 0.02  # seconds: how often the watchdog looks at heartbeats


# -- what owners and the watchdog tell the supervisor -----------------------------------------
@dataclass(frozen=True)
class Launched:
    name: str
    ok: bool
    pid: int
    reason: str


@dataclass(frozen=True)
class Terminated:
    name: str
    reason: str


@dataclass(frozen=True)
class Exited:
    name: str
    number: int
    hang: str


@dataclass(frozen=True)
class Tick:
    """The watchdog is alive; the supervisor's answer (a heartbeat) proves its thread is too."""


# -- what the supervisor tells an owner ---------------------------------------------------------
@dataclass(frozen=True)
class Launch:
    pass


@dataclass(frozen=True)
class Terminate:
    pass


@dataclass
class Incarnation:
    """One run of a child process, as the watchdog sees it."""

    number: int
    process: Any
    control: ControlBlock
    liveness: float
    ready_at: float
    running: bool = True
    hang: str = ""
    mark: tuple[float, float] | None = None  # (when, run_delay then): the silence being judged


class ChildOwner(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(self, name: str, path: str, spec: ChildSpec | SupervisorSpec, boot: dict[str, Any],
                 context: BaseContext, watchdog: Watchdog, supervisor: pykka.ActorRef[Any]) -> None:
        super().__init__()
        self.name, self.path, self.spec = name, path, spec
        self.boot = boot  # the Boot fields that stay the same across incarnations
        self.context = context
        self.watchdog = watchdog
        self.supervisor = supervisor
        self.control = ControlBlock(boot["control_file"])
        self.number = 0
        self.process: Any = None
        self.status: mpc.Connection | None = None
        self.death_writer: mpc.Connection | None = None

    def on_receive(self, message: Any) -> Any:
        """Every job ends with a message to the supervisor, whatever happens: a job that died
        silently would leave the supervisor waiting on it for ever."""
        if isinstance(message, Launch):
            try:
                outcome = self.launch()
            except Exception as exc:  # e.g. the fork server died under process.start()
                log.exception("could not start the child", extra={"path": self.path})
                self._forget()
                outcome = (False, 0, f"could not start: {type(exc).__name__}: {exc}")
            self.supervisor.tell(Launched(self.name, *outcome))
        elif isinstance(message, Terminate):
            try:
                reason = self.terminate()
            except Exception as exc:
                log.exception("could not stop the child", extra={"path": self.path})
                self._forget()
                reason = f"stop failed: {type(exc).__name__}: {exc}"
            self.supervisor.tell(Terminated(self.name, reason))

    def _forget(self) -> None:
        """After a failure mid-job: kill what may run, close what is open, start afresh."""
        self.watchdog.unwatch(self.name)
        process, self.process = self.process, None
        if process is not None and process.pid:
            try:
                os.kill(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for conn in (self.status, self.death_writer):
            if conn is not None:
                conn.close()
        self.status = self.death_writer = None

    def on_stop(self) -> None:
        self.control.close()

    def launch(self) -> tuple[bool, int, str]:
        """Start an incarnation and wait for it to report ready: (ok, pid, reason)."""
        self.number += 1
        status_r, status_w = self.context.Pipe(duplex=False)
        death_r, death_w = self.context.Pipe(duplex=False)
        boot = Boot(path=self.path, spec=self.spec, death=death_r, status=status_w, **self.boot)
        process = self.context.Process(  # type: ignore[attr-defined]
            target=child.main, args=(boot,), name=self.path)
        process.start()
        status_w.close()
        death_r.close()
        self.process, self.status, self.death_writer = process, status_r, death_w
        ok, reason = self._await_ready()
        if ok:
            self.watchdog.watch(self.name, Incarnation(
                self.number, process, self.control, self.spec.liveness, time.monotonic()))
        else:
            self.kill()
        return ok, process.pid or 0, reason

    def _await_ready(self) -> tuple[bool, str]:
        assert self.status is not None
        if self.status.poll(self.spec.start_timeout):
            try:
                said = self.status.recv()
            except EOFError:
                said = ("failed", "")
            if said[0] == "ready":
                return True, ""
            self.process.join(1.0)
            return False, exit_reason(self.process.exitcode, said[1], "")
        return False, f"not ready within {self.spec.start_timeout} s"

    def terminate(self) -> str:
        """SIGTERM, then SIGKILL after the shutdown timeout. Returns the exit reason."""
        process = self.process
        if process is None:
            return "not running"
        self.watchdog.unwatch(self.name)
        if process.is_alive():
            os.kill(process.pid, signal.SIGTERM)
            process.join(self.spec.shutdown)
            if process.is_alive():
                log.warning("shutdown timeout, killing", extra={"path": self.path,
                                                                "timeout": self.spec.shutdown})
                process.kill()
        process.join()
        self._kill_if_lost()
        return self._collect("")

    def kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()
            self.process.join()
        self._collect("")

    def exited(self, hang: str) -> str:
        """The process is gone on its own: collect why."""
        if self.process is not None:
            self.process.join()
            self._kill_if_lost()
        return self._collect(hang)

    def _kill_if_lost(self) -> None:
        """With its fork server gone, a child looks exited while it may still run (reparented):
        kill it by pid, so the next incarnation never shares its mailbox with it."""
        if self.process.exitcode == STATUS_LOST and self.process.pid:
            try:
                os.kill(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _collect(self, hang: str) -> str:
        said = ""
        if self.status is not None:
            try:
                while self.status.poll(0):
                    msg = self.status.recv()
                    said = msg[1] if msg[0] == "failed" else said
            except (EOFError, OSError):
                pass
            self.status.close()
            self.status = None
        if self.death_writer is not None:
            self.death_writer.close()
            self.death_writer = None
        code = self.process.exitcode if self.process is not None else None
        self.process = None
        return exit_reason(code, said, hang)


@dataclass
class Watchdog:
    """Watches the running children; tells the supervisor of each exit, and ticks."""

    supervisor: Any  # the Supervisor's pykka ActorRef
    run_delay: Callable[[int], float] = field(default=lambda pid: run_delay(pid))
    children: dict[str, Incarnation] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopped: threading.Event = field(default_factory=threading.Event)

    def watch(self, name: str, inc: Incarnation) -> None:
        with self.lock:
            self.children[name] = inc

    def unwatch(self, name: str) -> None:
        with self.lock:
            inc = self.children.pop(name, None)
        if inc is not None:
            inc.running = False

    def run(self) -> None:
        try:
            while not self.stopped.is_set():
                with self.lock:
                    watched = dict(self.children)
                sentinels = {inc.process.sentinel: (n, inc) for n, inc in watched.items()}
                for ready in mpc.wait(list(sentinels), WATCH_TICK) if sentinels else []:
                    name, inc = sentinels[ready]  # type: ignore[index]
                    self._gone(name, inc)
                if not sentinels:
                    self.stopped.wait(WATCH_TICK)
                self._check_hangs(watched, time.monotonic())
                self.supervisor.tell(Tick())
        except pykka.ActorDeadError:
            return  # the supervisor is gone: nothing left to watch for

    def _gone(self, name: str, inc: Incarnation) -> None:
        with self.lock:
            if self.children.get(name) is not inc:
                return
            del self.children[name]
        self.supervisor.tell(Exited(name, inc.number, inc.hang))

    def _check_hangs(self, watched: dict[str, Incarnation], now: float) -> None:
        """A child silent for longer than its liveness is hung, unless it spent most of the
        last stretch of its silence waiting for a CPU: on an overloaded machine a healthy actor
        can go seconds without running, and that is starvation, not a hang. The kernel tells
        the two apart (``run_delay`` in /proc/PID/schedstat grows only while runnable)."""
        for inc in watched.values():
            if not inc.liveness or inc.hang:
                continue
            silent = now - max(inc.control.last_beat, inc.ready_at)
            if silent <= inc.liveness / 2:
                inc.mark = None
                continue
            waited = self.run_delay(inc.process.pid)
            if inc.mark is None:
                inc.mark = (now, waited)
            if silent <= inc.liveness or now - inc.mark[0] < inc.liveness / 2:
                continue
            since, waited_then = inc.mark
            if waited - waited_then > (now - since) / 2:
                inc.mark = (now, waited)  # starved: judge the next stretch afresh
                log.warning("child silent while starved of CPU; not counted as hung",
                            extra={"pid": inc.process.pid, "silent": round(silent, 2),
                                   "waited_for_cpu": round(waited - waited_then, 2)})
                continue
            inc.hang = f"hung: no heartbeat for {silent:.1f} s (liveness {inc.liveness:g} s)"
            log.error("child hung, killing", extra={"pid": inc.process.pid,
                                                     "silent": round(silent, 2)})
            inc.process.kill()


def run_delay(pid: int) -> float:
    """Seconds the threads of ``pid`` have spent runnable but waiting for a CPU (0 where the
    kernel does not say, which leaves wall-clock silence as the only measure)."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return total / 1e9
