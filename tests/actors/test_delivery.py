"""Delivery under real time and load: kills at random moments mid-stream, floods into slow
handlers, poison messages, asks that time out, and the control block read while it is written."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from actors.client import Client
from actors.control import ControlBlock
from actors.mailbox import mailbox_file
from messages.codec import encode
from messages.errors import AskTimeout
from messages.runtime import Probe, ProbeBurst
from tests.support.probes import read_record
from tests.support.processes import wait_until, within

pytestmark = pytest.mark.timeout(300)


def received(tree, name: str, sender: str) -> list[int]:  # noqa: ANN001
    return [s for who, s in read_record(str(tree.workdir / f"{name}.rec")) if who == sender]


def without_repeats(seqs: list[int]) -> tuple[list[int], int]:
    """The sequence with consecutive repeats (a redelivered message in hand) folded, and how
    many were folded."""
    out: list[int] = []
    for s in seqs:
        if not out or out[-1] != s:
            out.append(s)
    return out, len(seqs) - len(out)


@pytest.mark.timeout(900)  # seconds in CI; minutes on a machine shared with other work
def test_kill_9_at_random_moments_mid_stream_loses_nothing(run_tree) -> None:  # noqa: ANN001
    tree = run_tree("stream")
    client, streamer = Client(tree.rundir), Client(tree.rundir)
    n = 100_000
    result: list[object] = []
    threading.Thread(target=lambda: result.append(
        streamer.ask("t/send", ProbeBurst("t/recv", n), timeout=within(600))),
        daemon=True).start()
    rng = random.Random(11)
    kills = 0
    while kills < 30 and not result:
        pid = client.node("t", "t/recv")["pid"]
        if pid:
            time.sleep(rng.uniform(0.0, 0.06))
            try:
                os.kill(pid, signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
            wait_until(lambda p=pid: client.node("t", "t/recv")["pid"] not in (0, p), 10,
                       "t/recv to be restarted")
    wait_until(lambda: bool(result), 600, "the stream to be answered")
    assert result == [n]
    assert kills >= 30, f"the stream ended after {kills} kills; make it longer"
    seqs, repeats = without_repeats(received(tree, "recv", "t/send"))
    assert seqs == list(range(n + 1))  # all delivered, in order
    assert repeats <= kills  # a duplicate only for the message in hand at a kill
    client.close()
    streamer.close()


@pytest.mark.timeout(900)
def test_a_flood_into_a_slow_handler_is_progress_not_a_hang(run_tree) -> None:  # noqa: ANN001
    tree = run_tree("flood")
    client = Client(tree.rundir)
    client.subscribe("t")
    n = 200_000  # 0.1 ms each: 20 s of work, arriving in batches of thousands
    assert client.ask("t/send", ProbeBurst("t/recv", n), timeout=within(600)) == n
    exits = [e for e in client.events(0.2) if e.kind in ("exited", "restarted")]
    assert exits == []
    assert received(tree, "recv", "t/send") == list(range(n + 1))  # once each, in order
    assert client.node("t", "t/recv")["restarts"] == 0
    client.close()


def test_two_poison_messages_become_two_dead_letters_and_the_tree_stays_up(run_tree) -> None:  # noqa: ANN001
    tree = run_tree("basic")  # default intensity: 5 restarts in 10 s
    client = Client(tree.rundir)
    client.subscribe("t")
    for seq, payload in ((1, b""), (2, b"poison"), (3, b""), (4, b"poison"), (5, b"")):
        client.tell("t/a", Probe("x", seq, payload))
    dead = []
    for event in client.events(within(20)):
        assert event.kind != "escalated", event.reason
        if event.kind == "dead_letter":
            dead.append(event)
            if len(dead) == 2:
                break
    assert len(dead) == 2
    assert client.ask("t/a", Probe("sync", 0)) == 0
    assert received(tree, "a", "x") == [1, 3, 5]
    assert tree.proc.poll() is None
    node = client.node("t", "t/a")
    assert node["state"] == "running" and node["dead_letters"] == 2
    client.close()


def test_an_ask_that_timed_out_is_never_handled_later(run_tree) -> None:  # noqa: ANN001
    tree = run_tree("slow")
    client = Client(tree.rundir)
    client.tell("t/a", Probe("x", 1, b"sleep:2"))  # the actor is busy for 2 s
    with pytest.raises(AskTimeout):
        client.ask("t/a", Probe("late", 2), timeout=0.5)
    assert client.ask("t/a", Probe("sync", 0), timeout=within(10)) == 0
    assert received(tree, "a", "late") == []
    assert client.node("t", "t/a")["expired_asks"] == 1
    client.close()


def test_an_ask_to_a_full_mailbox_is_withdrawn_at_its_deadline(run_tree) -> None:  # noqa: ANN001
    tree = run_tree("slow")
    client = Client(tree.rundir)
    client.tell("t/a", Probe("x", 0, b"sleep:3"))
    in_hand = ControlBlock(os.path.join(tree.rundir, "t.a.ctl"))
    wait_until(lambda: in_hand.held() is not None, 5, "t/a to take the sleeping probe")
    filled = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as raw:  # fill the kernel queue
        raw.setblocking(False)
        try:
            while True:
                raw.sendto(encode(Probe("fill", filled), stamp=filled + 1),
                           mailbox_file(tree.rundir, "t/a"))
                filled += 1
        except BlockingIOError:
            pass
    with pytest.raises(AskTimeout, match="did not take"):
        client.ask("t/a", Probe("late", 1), timeout=0.5)
    assert client.ask("t/a", Probe("sync", 0), timeout=within(20)) == 0
    assert received(tree, "a", "fill") == list(range(filled))
    assert received(tree, "a", "late") == []
    client.close()


def _beat_hard(file: str, seconds: float) -> None:
    block = ControlBlock(file)
    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end:
        block.beat(now)


def test_a_heartbeat_read_while_it_is_written_is_never_torn(tmp_path: Path) -> None:
    """The watchdog reads beats while actors write them; a torn or zeroed read looks like an
    actor silent since its start, and gets a healthy actor killed as hung."""
    file = str(tmp_path / "a.ctl")
    block = ControlBlock(file, create=True)
    first = time.monotonic()
    block.beat(first)
    writer = multiprocessing.get_context("spawn").Process(target=_beat_hard, args=(file, 1.5))
    writer.start()
    reads = torn = 0
    last = first
    while writer.is_alive():
        beat = block.last_beat
        if beat < last:  # a beat never goes back in time; a torn or zeroed read does
            torn += 1
        last = max(last, beat)
        reads += 1
    writer.join()
    assert last > first, "the writer never beat"
    assert reads > 10_000 and torn == 0


def test_what_a_sender_holds_for_a_mailbox_that_never_drains_is_bounded(tmp_path: Path) -> None:
    import asyncio

    from actors.mailbox import HIGH_WATER, MAX_PENDING, bind_mailbox
    from actors.transport import AsyncTransport, SyncTransport
    from messages.errors import ActorUnavailable, MailboxFull

    sink = bind_mailbox(mailbox_file(str(tmp_path), "never/read"))  # bound, never read
    blocking = SyncTransport(str(tmp_path))
    with pytest.raises(ActorUnavailable, match="in time"):
        for seq in range(1_000_000):
            blocking.tell("never/read", Probe("x", seq, b"." * 100), deadline=0.0)
    held = sum(out.pending_bytes for out in blocking.outlets.values())
    assert HIGH_WATER < held <= HIGH_WATER + 200

    async def flood() -> int:
        transport = AsyncTransport(str(tmp_path), asyncio.get_running_loop())
        with pytest.raises(MailboxFull):
            for seq in range(1_000_000):
                transport.tell("never/read", Probe("y", seq, b"." * 100))
        return sum(out.pending_bytes for out in transport.outlets.values())

    assert asyncio.run(flood()) <= MAX_PENDING
    blocking.close()
    sink.close()
