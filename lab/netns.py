"""Network namespaces for the lab: names that carry the run's owner, commands run inside them,
sockets opened inside them, and the clean-up of every namespace a run (or a dead run) left.

A namespace is named ``hpl<pid>x<tag>-<role>``: ``pid`` is the process that built it, so
``down`` can tell a leftover (its owner is gone) from a lab another process is running now, and
``tag`` keeps two labs of one process apart.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from typing import TypeVar

PREFIX = "hpl"
NAME = re.compile(rf"^{PREFIX}(\d+)x(\w+)-(\w+)$")
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


class LabError(RuntimeError):
    """The lab could not be built or driven; the message says which command and why."""


def sh(*command: str, check: bool = True, timeout: float = 20) -> str:
    """Run one command (no shell); its stdout, or ``LabError`` with its stderr."""
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{' '.join(command)}: {exc}") from None
    if check and out.returncode != 0:
        raise LabError(f"{' '.join(command)}: {out.stderr.strip() or out.returncode}")
    return out.stdout


def in_ns(ns: str, *command: str, check: bool = True) -> str:
    return sh("ip", "netns", "exec", ns, *command, check=check)


def usable() -> str | None:
    """None if this process can build a lab, else why not (for a test's skip reason)."""
    if os.geteuid() != 0:
        return "the NAT lab needs root (network namespaces, iptables)"
    probe = f"{PREFIX}{os.getpid()}xprobe-probe"
    try:
        sh("ip", "netns", "add", probe)
        in_ns(probe, "iptables", "-t", "nat", "-L", "-n")
        in_ns(probe, "conntrack", "-L")
    except LabError as exc:
        return f"network namespaces with iptables NAT and conntrack are unavailable: {exc}"
    finally:
        sh("ip", "netns", "del", probe, check=False)
    return None


def namespaces() -> list[str]:
    return [line.split()[0] for line in sh("ip", "netns", "list").splitlines() if line.strip()]


def owner_alive(name: str) -> bool:
    """Whether the process that built ``name`` still runs (a zombie no longer does: in a
    container whose init does not reap, a killed lab stays one)."""
    m = NAME.match(name)
    if m is None:
        return False
    try:
        with open(f"/proc/{m[1]}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def kill_namespace(ns: str) -> None:
    """Kill every process still inside ``ns`` (ours: only the lab starts processes there),
    then delete it; its veths go with it."""
    for _ in range(20):
        pids = [int(p) for p in sh("ip", "netns", "pids", ns, check=False).split()]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    sh("ip", "netns", "del", ns, check=False)


def clean(run: str | None = None, everything: bool = False) -> list[str]:
    """Delete the namespaces of one run (``hpl<pid>x<tag>``), or of every dead run, or of all
    runs with ``everything``; returns what was deleted."""
    gone = []
    for ns in namespaces():
        if not NAME.match(ns):
            continue
        mine = run is not None and ns.startswith(run + "-")
        if mine or (run is None and (everything or not owner_alive(ns))):
            kill_namespace(ns)
            gone.append(ns)
    return gone


_libc = ctypes.CDLL(None, use_errno=True)


def call_in(ns: str, work: Callable[[], T]) -> T:
    """Run ``work`` on a thread that has entered ``ns`` (setns is per thread), so a socket it
    opens lives in ``ns`` and can be used from anywhere afterwards."""
    result: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            with open(f"/var/run/netns/{ns}") as handle:
                if _libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                    raise LabError(f"setns {ns}: {os.strerror(ctypes.get_errno())}")
            result.append(work())
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=body, name=f"in-{ns}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def connect_in(ns: str, host: str, port: int, timeout: float = 5) -> socket.socket:
    """A TCP connection opened inside ``ns`` (a worker's UI listens on loopback there)."""
    return call_in(ns, lambda: socket.create_connection((host, port), timeout))
