"""Fault injection against real actor processes: every failure the supervisor must survive, and
the proof that no message was lost to it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import msgpack
import pytest

from actors.client import Client
from actors.mailbox import mailbox_file
from messages.codec import encode_envelope, stamp_bytes
from messages.errors import RemoteError
from messages.runtime import Fault, Probe
from messages.tags import Tag
from tests.support.probes import read_record
from tests.support.processes import alive, descendants, wait_until, within


@pytest.fixture
def basic(run_tree):  # noqa: ANN001, ANN201
    tree = run_tree("basic")
    client = Client(tree.rundir)
    client.subscribe("t")
    yield tree, client
    client.close()


def pid_of(client: Client, path: str) -> int:
    return client.node("t", path)["pid"]


def test_messages_sent_while_stopped_are_delivered_in_order(basic) -> None:  # noqa: ANN001
    tree, client = basic
    client.stop("t", "t/a")
    for seq in range(200):
        client.tell("t/a", Probe("x", seq))
    assert client.restart("t", "t/a") == "restarted"
    assert client.ask("t/a", Probe("sync", 0)) == 0
    got = [s for who, s in read_record(str(tree.workdir / "a.rec")) if who == "x"]
    assert got == list(range(200))


def test_kill_9_restarts_and_loses_nothing(basic) -> None:  # noqa: ANN001
    tree, client = basic
    old = pid_of(client, "t/a")
    os.kill(old, signal.SIGKILL)
    for seq in range(300):
        client.tell("t/a", Probe("x", seq))
    event = client.wait_event("restarted", "t/a", within(10))
    assert event.reason == "killed by SIGKILL" and event.pid != old
    assert client.ask("t/a", Probe("sync", 0)) == 0
    got = [s for who, s in read_record(str(tree.workdir / "a.rec")) if who == "x"]
    assert got == list(range(300))


def test_handler_exception_restarts_the_actor(basic) -> None:  # noqa: ANN001
    _, client = basic
    old = pid_of(client, "t/a")
    client.tell("t/a", Fault("raise"))
    event = client.wait_event("exited", "t/a", within(10))
    assert "FaultInjected" in event.reason and event.pid == old
    client.wait_event("restarted", "t/a", within(10))
    node = client.node("t", "t/a")
    assert node["restarts"] == 1 and node["state"] == "running" and node["pid"] != old


def test_failed_ask_returns_the_error_and_the_actor_carries_on(basic) -> None:  # noqa: ANN001
    _, client = basic
    old = pid_of(client, "t/a")
    with pytest.raises(RemoteError) as err:
        client.ask("t/a", Fault("raise"))
    assert err.value.remote_type == "FaultInjected"
    assert client.ask("t/a", Probe("x", 5)) == 5
    assert pid_of(client, "t/a") == old


@pytest.mark.parametrize("path", ["t/a", "t/blk"])
def test_hang_is_detected_and_restarted(basic, path: str) -> None:  # noqa: ANN001
    _, client = basic
    client.tell(path, Fault("hang"))
    event = client.wait_event("exited", path, within(10))
    assert event.reason.startswith("hung: no heartbeat")
    client.wait_event("restarted", path, within(10))
    assert client.ask(path, Probe("x", 7)) == 7


def test_poison_message_becomes_a_dead_letter(basic) -> None:  # noqa: ANN001
    tree, client = basic
    client.tell("t/a", Probe("x", 1))
    client.tell("t/a", Probe("x", 2, b"poison"))
    client.tell("t/a", Probe("x", 3))
    event = client.wait_event("dead_letter", "t/a", within(20))
    assert "poison" in event.reason and "3 attempts" in event.reason
    assert client.ask("t/a", Probe("sync", 0)) == 0
    got = [s for who, s in read_record(str(tree.workdir / "a.rec")) if who == "x"]
    assert got == [1, 3]
    node = client.node("t", "t/a")
    assert node["dead_letters"] == 1 and node["restarts"] == 3  # one per crash


def test_malformed_frame_is_counted_and_the_actor_carries_on(basic) -> None:  # noqa: ANN001
    tree, client = basic
    old = pid_of(client, "t/a")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as raw:
        for junk in (b"\xc1", b"not msgpack at all", b"\x91\x92\xcd\x03\xe7\x90"):
            raw.sendto(junk, mailbox_file(tree.rundir, "t/a"))
    assert client.ask("t/a", Probe("x", 1)) == 1
    node = client.node("t", "t/a")
    assert node["malformed"] == 3 and node["pid"] == old


def test_a_bad_envelope_spoils_only_itself(basic) -> None:  # noqa: ANN001
    tree, client = basic
    good = [encode_envelope(Probe("x", 1)), [9999, []], [Tag.PROBE, ["x", "two", b""]],
            encode_envelope(Probe("x", 4))]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as raw:
        raw.sendto(stamp_bytes(1) + msgpack.packb(good, use_bin_type=True),
                   mailbox_file(tree.rundir, "t/a"))
    assert client.ask("t/a", Probe("sync", 0)) == 0
    assert [s for who, s in read_record(str(tree.workdir / "a.rec")) if who == "x"] == [1, 4]
    assert client.node("t", "t/a")["malformed"] == 2


def test_nested_supervisor_restarts_its_child(basic) -> None:  # noqa: ANN001
    _, client = basic
    old = pid_of(client, "t/sub/c")
    os.kill(old, signal.SIGKILL)
    event = client.wait_event("restarted", "t/sub/c", within(10))
    assert event.pid != old
    assert client.ask("t/sub/c", Probe("x", 4)) == 4


def test_kill_9_of_a_supervisor_leaves_no_descendant(basic) -> None:  # noqa: ANN001
    _, client = basic
    sub = pid_of(client, "t/sub")
    below = descendants(sub)
    assert pid_of(client, "t/sub/c") in below
    os.kill(sub, signal.SIGKILL)
    wait_until(lambda: not any(alive(p) for p in below), 5, "t/sub's descendants to exit")
    client.wait_event("restarted", "t/sub", within(10))
    assert client.ask("t/sub/c", Probe("x", 9)) == 9


def test_kill_9_of_the_fork_server_restarts_every_child_and_leaves_no_stray(basic) -> None:  # noqa: ANN001
    tree, client = basic
    forkserver = next(p for p in descendants(tree.proc.pid)
                      if "forkserver" in Path(f"/proc/{p}/cmdline").read_text()
                      and _parent(p) == tree.proc.pid)
    old = {path: pid_of(client, path) for path in ("t/a", "t/blk", "t/sub")}
    os.kill(forkserver, signal.SIGKILL)
    pending = set(old)  # the watchdog sees the three exits in any order
    for event in client.events(within(10)):
        if event.kind == "restarted":
            pending.discard(event.path)
        if not pending:
            break
    assert not pending, f"not restarted: {pending}"
    wait_until(lambda: not any(alive(p) for p in old.values()), 5, "the old incarnations to exit")
    assert client.ask("t/a", Probe("x", 11)) == 11
    assert client.ask("t/sub/c", Probe("x", 12)) == 12


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def test_kill_9_of_the_root_leaves_no_descendant(run_tree) -> None:  # noqa: ANN001
    tree = run_tree("basic")
    below = descendants(tree.proc.pid)
    assert len(below) >= 5  # a, blk, sub, sub/c and the fork servers
    tree.proc.kill()
    tree.proc.wait()
    wait_until(lambda: not any(alive(p) for p in below), 5, "every descendant to exit")


def test_one_for_all_restarts_every_child(run_tree) -> None:  # noqa: ANN001
    tree = run_tree("all")
    client = Client(tree.rundir)
    before = {p: pid_of(client, p) for p in ("t/a", "t/b", "t/c")}
    client.subscribe("t")
    client.tell("t/b", Fault("crash"))
    client.wait_event("restarted", "t/c", within(10))
    after = {p: pid_of(client, p) for p in before}
    assert all(after[p] != before[p] for p in before)
    client.close()


def test_rest_for_one_restarts_later_children_in_order(run_tree) -> None:  # noqa: ANN001
    tree = run_tree("rest")
    client = Client(tree.rundir)
    a = pid_of(client, "t/a")
    client.subscribe("t")
    client.tell("t/b", Fault("crash"))
    events = []
    for event in client.events(within(5)):
        events.append((event.kind, event.path))
        if (event.kind, event.path) == ("restarted", "t/c"):
            break
    assert events == [("exited", "t/b"), ("stopped", "t/c"), ("started", "t/b"),
                      ("restarted", "t/b"), ("started", "t/c"), ("restarted", "t/c")]
    assert pid_of(client, "t/a") == a
    client.close()


def test_crash_loop_escalates_and_the_root_exits_non_zero(run_tree) -> None:  # noqa: ANN001
    tree = run_tree("fragile")
    client = Client(tree.rundir)
    client.subscribe("t")
    for _ in range(3):
        client.tell("t/a", Fault("crash"))
        event = next(e for e in client.events(within(10)) if e.kind in ("restarted", "escalated"))
    assert event.kind == "escalated" and "intensity" in event.reason
    assert tree.proc.wait(within(20)) == 1
    assert "restart intensity exceeded" in tree.logs()
    client.close()


def test_a_killed_roots_run_directory_is_reaped_by_the_next_root(tmp_path) -> None:  # noqa: ANN001
    from actors.rundir import OWNER_FILE
    from actors.rundir import reap_stale as reap_stale_rundirs

    stale, live, foreign = tmp_path / "p2p-dead", tmp_path / "p2p-live", tmp_path / "p2p-other"
    for d in (stale, live, foreign):
        d.mkdir()
    (stale / OWNER_FILE).write_text(str(_exited_pid()))
    (live / OWNER_FILE).write_text(str(os.getpid()))
    reap_stale_rundirs(str(tmp_path))
    assert not stale.exists() and live.exists() and foreign.exists()


def _exited_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
