"""The runtime against clients and timings that do not play along: byte-identical datagrams,
many poison messages, requests whose askers gave up, subscriptions that would circle, stop
requests while the tree starts, oversized datagrams, links planted in a run directory, a fork
server that dies under a start, and askers that come and go by the hundred."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pykka
import pytest

from actors.client import Client
from actors.control import ControlBlock
from actors.mailbox import mailbox_file
from actors.owner import ChildOwner, Launch, Launched, Watchdog
from actors.spec import ChildSpec
from messages.codec import MAX_FRAME_BYTES, encode, encode_envelope, pack_batch
from messages.errors import AskTimeout, RemoteError
from messages.runtime import Fault, Probe, RestartChild, StopChild, Subscribe
from tests.support.probes import read_record
from tests.support.processes import ROOT, start_tree, stop_tree, wait_until, within

pytestmark = pytest.mark.timeout(180)


def received(tree, name: str, sender: str) -> list[int]:  # noqa: ANN001
    return [s for who, s in read_record(str(tree.workdir / f"{name}.rec")) if who == sender]


def send_raw(rundir: str, path: str, data: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as raw:
        raw.sendto(data, mailbox_file(rundir, path))


def test_byte_identical_datagrams_are_both_delivered_across_a_crash(run_tree) -> None:  # noqa: ANN001
    tree = run_tree("basic")
    client = Client(tree.rundir)
    client.subscribe("t")
    twin = pack_batch([encode_envelope(Probe("dup", 7)), encode_envelope(Fault("crash"))], 99)
    send_raw(tree.rundir, "t/a", twin)
    send_raw(tree.rundir, "t/a", twin)  # the very same bytes, stamp included
    assert client.ask("t/a", Probe("sync", 0), timeout=within(20)) == 0
    assert received(tree, "a", "dup") == [7, 7]
    client.close()


def test_six_poison_messages_in_the_restart_period_never_escalate(run_tree) -> None:  # noqa: ANN001
    tree = run_tree("basic")  # intensity: 5 restarts in 10 s
    client = Client(tree.rundir)
    client.subscribe("t")
    for seq in range(6):
        client.tell("t/a", Probe("x", seq, b"poison"))
    client.tell("t/a", Probe("x", 100))
    dead = 0
    for event in client.events(within(60)):
        assert event.kind != "escalated", event.reason
        dead += event.kind == "dead_letter"
        if dead == 6:
            break
    assert dead == 6
    assert client.ask("t/a", Probe("sync", 0), timeout=within(20)) == 0
    assert received(tree, "a", "x") == [100]
    assert tree.proc.poll() is None
    client.close()


def test_a_control_request_whose_asker_gave_up_is_not_carried_out(run_tree) -> None:  # noqa: ANN001
    tree = run_tree("basic")
    client = Client(tree.rundir)
    before = client.node("t", "t/a")
    os.kill(tree.proc.pid, signal.SIGSTOP)
    try:
        with pytest.raises(AskTimeout):
            client.ask("t", RestartChild("t/a"), timeout=0.5)
    finally:
        os.kill(tree.proc.pid, signal.SIGCONT)
    after = client.node("t", "t/a")  # answered after the expired request, in mailbox order
    assert (after["pid"], after["restarts"]) == (before["pid"], before["restarts"])
    client.close()


def test_a_supervisor_refuses_to_send_its_events_to_itself(run_tree) -> None:  # noqa: ANN001
    tree = run_tree("basic")
    client = Client(tree.rundir)
    for root, path in (("t", "t"), ("t/sub", "t/sub"), ("t/sub", "t")):
        with pytest.raises(RemoteError, match="events already"):
            client.ask(root, Subscribe(path))
    assert client.restart("t", "t/a") == "restarted"
    client.close()


def test_a_datagram_too_large_to_hold_is_counted_as_malformed(run_tree) -> None:  # noqa: ANN001
    tree = run_tree("basic")
    client = Client(tree.rundir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as raw:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        raw.sendto(b"\0" * (MAX_FRAME_BYTES + 100), mailbox_file(tree.rundir, "t/a"))
    assert client.ask("t/a", Probe("x", 1)) == 1
    assert client.node("t", "t/a")["malformed"] == 1
    client.close()


def test_a_stop_request_while_the_tree_starts_neither_blocks_its_start_nor_its_stop(
        tmp_path: Path) -> None:
    log = tmp_path / "tree.log"
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "support" / "trees.py"),
                             "basic", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=open(log, "w"), text=True)  # noqa: SIM115
    try:
        mailbox = mailbox_file(str(tmp_path / "run"), "t")
        wait_until(lambda: os.path.exists(mailbox), 20, "the root's mailbox")
        send_raw(str(tmp_path / "run"), "t", encode(StopChild("t/a")))
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY", log.read_text()[-2000:]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(within(30)) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_links_and_files_planted_in_a_named_run_directory_are_left_alone(
        tmp_path: Path) -> None:
    rundir = tmp_path / "run"
    rundir.mkdir()
    precious = tmp_path / "precious"
    precious.write_text("mine")
    (rundir / "t.a.ctl").symlink_to(precious)
    tree = start_tree("basic", tmp_path)
    (rundir / "t.backup").write_text("also mine")  # named like the tree's files, made meanwhile
    client = Client(tree.rundir)
    assert client.ask("t/a", Probe("x", 1)) == 1
    client.close()
    stop_tree(tree)
    assert precious.read_text() == "mine"
    assert sorted(os.listdir(rundir)) == ["t.backup"]


def test_askers_that_come_and_go_leave_no_descriptor_behind(run_tree) -> None:  # noqa: ANN001
    tree = run_tree("basic")

    def descriptors() -> int:
        return len(os.listdir(f"/proc/{tree.proc.pid}/fd"))

    Client(tree.rundir).close()
    before = descriptors()
    for _ in range(150):
        client = Client(tree.rundir)
        client.tree("t")
        client.close()
    assert descriptors() <= before + 70  # the reply sockets of the last 64 askers, no more


class _Collector(pykka.ThreadingActor):
    def __init__(self) -> None:
        super().__init__()
        self.got: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        if message == "got":
            return list(self.got)
        self.got.append(message)
        return None


class _DeadForkServer:
    """A context whose processes cannot start: the fork server died under the start."""

    def Pipe(self, duplex: bool = False) -> Any:  # noqa: N802
        import multiprocessing

        return multiprocessing.Pipe(duplex)

    def Process(self, **_: Any) -> Any:  # noqa: N802
        class Doomed:
            pid = None

            def start(self) -> None:
                raise EOFError("unexpected EOF")

        return Doomed()


def test_a_start_that_raises_is_reported_as_a_failed_start(tmp_path: Path) -> None:
    control = str(tmp_path / "c.ctl")
    ControlBlock(control, create=True).close()
    collector = _Collector.start()
    watchdog = Watchdog(collector)
    boot = {"rundir": str(tmp_path), "mailbox": None, "control_file": control, "sockets": {},
            "mailboxes": {}, "log_level": 20}
    owner = ChildOwner.start("c", "t/c", ChildSpec("c", "x:Y"), boot, _DeadForkServer(),
                             watchdog, collector)
    try:
        owner.tell(Launch())
        wait_until(lambda: collector.ask("got"), 10, "the owner's report")
        (report,) = collector.ask("got")
        assert isinstance(report, Launched) and not report.ok
        assert "EOFError" in report.reason
        assert owner.is_alive()
    finally:
        owner.stop()
        collector.stop()
