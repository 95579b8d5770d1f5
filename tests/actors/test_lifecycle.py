"""Process life and what a tree leaves behind: a child stuck in C holding the GIL when its
supervisor is killed, the run directory, reply sockets and inboxes, subscribers that die or never
read, and control requests for paths that do not exist."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actors.client import Client
from actors.control import ControlBlock
from actors.logs import KeyValueFormatter
from messages.runtime import Fault, Probe
from tests.support.processes import (
    ROOT,
    alive,
    descendants,
    start_tree,
    stop_tree,
    wait_until,
    within,
)

pytestmark = pytest.mark.timeout(180)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "supervisor.py"), *args], text=True,
                          capture_output=True, timeout=within(60),
                          env={**os.environ, **(env or {})})


def test_a_child_stuck_holding_the_gil_dies_with_its_killed_supervisor(run_tree) -> None:  # noqa: ANN001
    tree = run_tree("basic")
    client = Client(tree.rundir)
    sub, stuck = client.node("t", "t/sub")["pid"], client.node("t", "t/sub/c")["pid"]
    below = descendants(sub)
    client.tell("t/sub/c", Fault("stall"))
    beat = ControlBlock(os.path.join(tree.rundir, "t.sub.c.ctl"))
    wait_until(lambda: time.monotonic() - beat.last_beat > 0.3, 5, "t/sub/c to stall")
    os.kill(sub, signal.SIGKILL)  # before its watchdog (liveness 1 s) would kill the child
    wait_until(lambda: not any(alive(p) for p in below), 5, "every process below t/sub to exit")
    assert not alive(stuck)
    wait_until(lambda: any(n["path"] == "t/sub/c" and n["state"] == "running"
                           for n in client.tree("t")), 10, "t/sub/c to run again")
    assert client.ask("t/sub/c", Probe("x", 5)) == 5
    client.close()


def test_a_named_run_directory_keeps_what_the_runtime_did_not_create(tmp_path: Path) -> None:
    rundir = tmp_path / "run"
    rundir.mkdir()
    (rundir / "notes.txt").write_text("mine")
    tree = start_tree("basic", tmp_path)
    client = Client(tree.rundir)
    assert client.ask("t/a", Probe("x", 1)) == 1
    client.close()
    stop_tree(tree)
    assert sorted(os.listdir(rundir)) == ["notes.txt"]
    assert (rundir / "notes.txt").read_text() == "mine"


def test_a_run_directory_the_runtime_created_is_removed(tmp_path: Path) -> None:
    tree = start_tree("basic", tmp_path)
    stop_tree(tree)
    assert not (tmp_path / "run").exists()


def test_restarts_and_clients_leave_no_file_behind(run_tree) -> None:  # noqa: ANN001
    tree = run_tree("basic")
    before = sorted(os.listdir(tree.rundir))
    for _ in range(3):
        client = Client(tree.rundir)
        client.subscribe("t")
        assert client.restart("t", "t/a") == "restarted"
        os.kill(client.node("t", "t/sub/c")["pid"], signal.SIGKILL)
        client.wait_event("restarted", "t/sub/c", within(10))
        client.close()
    assert sorted(os.listdir(tree.rundir)) == before
    assert all(f.endswith((".mbox", ".ctl")) or f == "root.pid" for f in before)


def test_a_subscriber_that_is_gone_is_dropped_and_one_that_never_reads_stalls_nothing(
        run_tree) -> None:  # noqa: ANN001
    tree = run_tree("basic")
    gone, deaf, listener = Client(tree.rundir), Client(tree.rundir), Client(tree.rundir)
    for c in (gone, deaf, listener):
        c.subscribe("t")
    gone.close()
    for _ in range(40):  # far more events than the deaf subscriber's mailbox holds
        assert listener.restart("t", "t/a") == "restarted"
    kinds = [e.kind for e in listener.events(0.5)]
    assert kinds.count("restarted") == 40
    wait_until(lambda: "subscriber gone, dropped" in tree.logs(), 5, "the dead subscriber dropped")
    deaf.close()
    listener.close()


def test_control_requests_for_paths_that_do_not_exist_fail_at_once(run_tree) -> None:  # noqa: ANN001
    tree = run_tree("basic")
    for path in ("nope/quic", "t/nope", "t/sub/nope"):
        out = cli("restart", path, "--rundir", tree.rundir)
        assert out.returncode == 2, out.stderr
        assert f"no actor at '{path}'" in out.stderr
    assert cli("tree", "t", "--rundir", tree.rundir).returncode == 0


def test_a_malformed_environment_variable_does_not_break_help_or_other_commands() -> None:
    for args in (("worker", "--help"), ("rendezvous", "--help"), ("tree", "--help")):
        out = cli(*args, env={"PORT": "abc", "RENDEZVOUS_STUN_PORT": "x"})
        assert out.returncode == 0, out.stderr
    out = cli("rendezvous", env={"PORT": "abc"})
    assert out.returncode == 2 and "PORT='abc' is not a whole number" in out.stderr


def test_json_logs_keep_the_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "handler crashed", None,
                                   sys.exc_info())
    line = json.loads(KeyValueFormatter("t/a", as_json=True).format(record))
    assert line["msg"] == "handler crashed"
    assert "ValueError: boom" in line["traceback"] and "Traceback" in line["traceback"]


def test_a_reply_socket_vanishes_with_its_process() -> None:
    from actors.transport import SyncTransport

    transport = SyncTransport("/nonexistent")
    name = transport.reply_file
    assert name.startswith("\0")
    transport.close()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe, pytest.raises(OSError):
        probe.connect(name)



class _Process:
    pid = 4242

    def __init__(self) -> None:
        self.killed = False

    def kill(self) -> None:
        self.killed = True


@pytest.mark.parametrize(("waiting", "hung"), [(0.0, True), (0.9, False)])
def test_silence_spent_waiting_for_a_cpu_is_starvation_not_a_hang(
        tmp_path: Path, waiting: float, hung: bool) -> None:
    """On an overloaded machine a healthy actor can go longer than its liveness without
    running at all; the watchdog tells that from a hang by the time it spent runnable."""
    from actors.owner import Incarnation, Watchdog

    block = ControlBlock(str(tmp_path / "a.ctl"), create=True)
    block.beat(100.0)
    clock = {"delay": 0.0}
    watchdog = Watchdog(None, run_delay=lambda pid: clock["delay"])
    inc = Incarnation(1, _Process(), block, liveness=1.0, ready_at=100.0)
    for now in (100.3, 100.6, 100.9, 101.2, 101.5):
        clock["delay"] += waiting * 0.3  # runnable for this share of each 0.3 s
        watchdog._check_hangs({"a": inc}, now)
    assert inc.process.killed is hung
    assert bool(inc.hang) is hung
