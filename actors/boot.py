"""What a new incarnation is given, and the exit codes every process of a tree speaks."""

from __future__ import annotations

import logging
import signal
import socket
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from actors.spec import ChildSpec, SupervisorSpec

EXIT_CRASHED = 1  # a handler or background task raised; the reason went up the status pipe
EXIT_ESCALATED = 2  # a nested supervisor gave up: restart intensity exceeded
EXIT_ORPHANED = 3  # the supervisor died first
EXIT_FAULT = 70  # Fault("crash")
# multiprocessing's forkserver popen reports 255 when it cannot learn a child's exit status: the
# fork server (the child's real parent) is gone.
STATUS_LOST = 255

_MEANING = {EXIT_CRASHED: "crashed", EXIT_ORPHANED: "orphaned", EXIT_FAULT: "fault injected: crash",
            EXIT_ESCALATED: "escalated"}


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


def exit_reason(exitcode: int | None, said: str, hang: str) -> str:
    """Why an incarnation ended, in words for the tree events and the log."""
    if hang:
        return hang
    if exitcode == STATUS_LOST and not said:
        return "fork server lost (exit status unknown; the process was killed to be sure)"
    if exitcode == 0:
        return "normal"
    if exitcode is not None and exitcode < 0:
        return f"killed by {signal.Signals(-exitcode).name}"
    meaning = _MEANING.get(exitcode or 0, "exit")
    return f"{meaning} (exit {exitcode}){': ' + said if said else ''}"
