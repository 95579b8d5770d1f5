"""Real processes for the tests: bounded waits, trees run as root processes, and a check that
nothing is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Every wait in the tests is a multiple of this, so a slow machine can stretch them all at once.
SCALE = float(os.environ.get("TEST_TIME_SCALE", "1"))


def within(seconds: float) -> float:
    return seconds * SCALE


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for kid in children.get(todo.pop(), []):
            found.add(kid)
            todo.append(kid)
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + within(timeout)
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


@dataclass
class RunningTree:
    proc: subprocess.Popen[str]
    workdir: Path
    log: Path

    @property
    def rundir(self) -> str:
        return str(self.workdir / "run")

    def logs(self) -> str:
        return self.log.read_text()


def start_tree(name: str, workdir: Path) -> RunningTree:
    log = workdir / "tree.log"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "support" / "trees.py"), name, str(workdir)],
        stdout=subprocess.PIPE, stderr=open(log, "w"), text=True,  # noqa: SIM115
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # bounded by the tree's own start timeouts
    if line.strip() != "READY":
        proc.kill()
        raise AssertionError(f"tree {name} did not start: {log.read_text()[-2000:]}")
    return RunningTree(proc, workdir, log)


def stop_tree(tree: RunningTree) -> None:
    below = descendants(tree.proc.pid)
    if tree.proc.poll() is None:
        tree.proc.send_signal(signal.SIGINT)
        try:
            tree.proc.wait(within(20))
        except subprocess.TimeoutExpired:
            tree.proc.kill()
            tree.proc.wait()
    wait_until(lambda: not any(alive(p) for p in below), 10, "the tree's processes to exit")
