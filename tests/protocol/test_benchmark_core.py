"""The benchmark's sans-I/O sender and receiver, paired in memory on a fake clock."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from messages.errors import DecodeError, FrameTooLarge, IllegalTransition, UsageError
from protocol.benchmark import frames
from protocol.benchmark.events import (
    ReceiveProgress,
    SendCancelled,
    SendFailed,
    SendFinished,
    SendProgress,
    SessionFinished,
    SessionStarted,
)
from protocol.benchmark.frames import MAX_CHUNK, Status
from protocol.benchmark.payload import FilePayload, GeneratedPayload, StreamedPayload
from protocol.benchmark.receiver import BenchmarkReceiver
from protocol.benchmark.sender import BenchmarkSender, SendState
from protocol.benchmark.stream import StreamCheck, stream_header
from protocol.benchmark.window import HASH_BUFFER, REORDER_WINDOW, ReceiveWindow
from protocol.udp.demux import DatagramKind, classify
from protocol.udp.layouts import FRAME_MAGIC

PEER = ("192.0.2.1", 4000)
OTHER_PEER = ("198.51.100.7", 5000)
Mangle = Callable[[list[bytes]], list[bytes]]
DONE = (SendState.FINISHED, SendState.FAILED, SendState.CANCELLED)


def chunks_of(size: int) -> int:
    return -(-size // MAX_CHUNK)


def seq_of(datagram: bytes) -> int | None:
    frame = frames.decode(datagram)
    return frame.seq if isinstance(frame, frames.Data) else None


def transfer(sender: BenchmarkSender, receiver: BenchmarkReceiver, now: float, *,
             addr: tuple[str, int] = PEER, mangle: Mangle = lambda d: d,
             back: Mangle = lambda d: d) -> list[bytes]:
    """One exchange both ways; returns what the sender put on the wire (before the link)."""
    sent = sender.datagrams_to_send(now)
    for datagram in mangle(sent):
        receiver.receive_datagram(datagram, addr, now)
    replies = [d for d, to in receiver.datagrams_to_send(now) if to == addr]
    for datagram in back(replies):
        sender.receive_datagram(datagram, now)
    return sent


def drain(core: BenchmarkSender | BenchmarkReceiver) -> list:
    events = []
    while (event := core.next_event()) is not None:
        events.append(event)
    return events


def run(sender: BenchmarkSender, receiver: BenchmarkReceiver, now: float = 0.0, *,
        until: float = 60.0, log: list[tuple[float, bytes]] | None = None, **link) -> float:
    """Drives both cores by their timers until the sender is done; returns the clock."""
    while sender.state not in DONE and now < until:
        for datagram in transfer(sender, receiver, now, **link):
            if log is not None:
                log.append((now, datagram))
        sender.handle_timer(now)
        receiver.handle_timer(now)
        timers = [t for t in (sender.get_timer(), receiver.get_timer()) if t is not None]
        now = max(min(timers, default=until), now + 1e-5)
    transfer(sender, receiver, now, **link)  # the last RESULT or CANCEL
    return now


def finished(sender: BenchmarkSender) -> SendFinished:
    events = [e for e in drain(sender) if not isinstance(e, SendProgress)]
    assert len(events) == 1 and isinstance(events[0], SendFinished), events
    return events[0]


def sender_for(size: int, *, session_id: int = 7, rate: float | None = 20e6,
               **settings) -> BenchmarkSender:
    return BenchmarkSender(session_id, GeneratedPayload(size), 0.0, rate=rate, **settings)


def test_a_complete_run_counts_every_byte_and_matches_the_sha256() -> None:
    size = 300_000
    sender, receiver = sender_for(size), BenchmarkReceiver()
    run(sender, receiver)
    done = finished(sender)
    assert done.result.status is Status.COMPLETE and done.sha256_match
    assert done.result.bytes_received == done.bytes_sent == size
    assert done.result.chunks == done.chunks_sent == chunks_of(size)
    assert done.result.lost == done.result.duplicates == done.result.reordered == 0
    assert done.sha256 == hashlib.sha256(GeneratedPayload(size).read(size)).digest()
    received = drain(receiver)
    assert isinstance(received[0], SessionStarted) and received[0].total_size == size
    assert received[-1] == SessionFinished(PEER, done.result)
    assert receiver.sessions == {} and not receiver.ignored


def test_generated_payload_is_the_same_however_it_is_read() -> None:
    whole = GeneratedPayload(200_000, seed=3).read(200_000)
    source = GeneratedPayload(200_000, seed=3)
    parts = [source.read(n) for n in (1, 1189, 65_535, 70_000, 100_000)]
    assert b"".join(parts) == whole and source.finished
    assert GeneratedPayload(200_000, seed=4).read(200_000) != whole
    assert len(GeneratedPayload().read(1 << 30)) == 16 * 1024 * 1024


def test_dropped_chunks_are_reported_lost_and_the_sha256_unchecked() -> None:
    size, dropped = 300_000, {3, 50, 51, 200}
    sender, receiver = sender_for(size), BenchmarkReceiver()
    run(sender, receiver, mangle=lambda ds: [d for d in ds if seq_of(d) not in dropped])
    result = finished(sender).result
    assert result.status is Status.INCOMPLETE and result.lost == len(dropped)
    assert result.chunks == chunks_of(size) - len(dropped)
    assert result.bytes_received == size - len(dropped) * MAX_CHUNK
    assert result.sha256 == bytes(32)


def swap_pairs_and_repeat() -> Mangle:
    """A link that swaps each pair of chunks (holding one back) and repeats chunks 10 and 11."""
    held: list[bytes] = []

    def mangle(datagrams: list[bytes]) -> list[bytes]:
        out = []
        for d in datagrams:
            if seq_of(d) is None:
                emitted = [*held, d]
                held.clear()
            elif held:
                emitted = [d, held.pop()]
            else:
                held.append(d)
                emitted = []
            out += emitted + [e for e in emitted if seq_of(e) in (10, 11)]
        return out
    return mangle


def test_reordering_and_duplicates_are_counted_and_the_payload_still_verifies() -> None:
    sender, receiver = sender_for(300_000), BenchmarkReceiver()
    run(sender, receiver, mangle=swap_pairs_and_repeat())
    done = finished(sender)
    assert done.result.status is Status.COMPLETE and done.sha256_match
    assert done.result.duplicates == 2 and done.result.lost == 0
    assert done.result.reordered == done.chunks_sent // 2


def drop_first(kind: type, count: int) -> Mangle:
    dropped = [0]

    def mangle(datagrams: list[bytes]) -> list[bytes]:
        kept = []
        for d in datagrams:
            if isinstance(frames.decode(d), kind) and dropped[0] < count:
                dropped[0] += 1
            else:
                kept.append(d)
        return kept
    return mangle


def test_lost_end_markers_cost_one_resend_interval_each() -> None:
    sender, receiver = sender_for(100_000), BenchmarkReceiver()
    run(sender, receiver, mangle=drop_first(frames.End, 2))
    assert finished(sender).sha256_match and sender.ends_sent == 3


def test_a_lost_result_is_answered_again_by_the_closed_session() -> None:
    sender, receiver = sender_for(100_000), BenchmarkReceiver()
    run(sender, receiver, back=drop_first(frames.Result, 1))
    assert finished(sender).sha256_match and sender.ends_sent == 2


def test_no_result_ends_the_run_with_a_clear_reason_after_the_timeout() -> None:
    sender, receiver = sender_for(100_000), BenchmarkReceiver()
    run(sender, receiver, back=lambda ds: [d for d in ds
                                           if isinstance(frames.decode(d), frames.Report)])
    failed = [e for e in drain(sender) if isinstance(e, SendFailed)]
    assert len(failed) == 1 and "no RESULT within 5.0 s" in failed[0].reason
    assert "the receiver had counted" in failed[0].reason
    assert sender.ends_sent == 25  # one END every 0.2 s


def test_a_silent_peer_fails_the_start() -> None:
    sender, receiver = sender_for(100_000), BenchmarkReceiver()
    run(sender, receiver, mangle=lambda ds: [])
    assert [type(e) for e in drain(sender)] == [SendFailed]
    assert sender.state is SendState.FAILED and sender.bytes_sent == 0


def test_cancel_stops_the_sender_and_closes_the_receiving_session() -> None:
    sender, receiver = sender_for(1_000_000, rate=1e6), BenchmarkReceiver()
    run(sender, receiver, until=0.3)
    sent_before = sender.bytes_sent
    sender.cancel(0.3)
    transfer(sender, receiver, 0.3)
    assert sender.datagrams_to_send(1.0) == [] and sender.get_timer() is None
    assert [e for e in drain(sender) if not isinstance(e, SendProgress)] == [
        SendCancelled(7, sent_before)]
    closed = drain(receiver)[-1]
    assert isinstance(closed, SessionFinished) and closed.result.status is Status.CANCELLED
    assert closed.result.bytes_received == sent_before and receiver.sessions == {}
    sender.cancel(0.4)  # a second cancel changes nothing


def test_two_sessions_at_once_are_kept_apart() -> None:
    """Same session id from two peers, interleaved: each counts only its own chunks."""
    one, two = sender_for(200_000), sender_for(120_000)
    receiver, now = BenchmarkReceiver(), 0.0
    while not (one.state in DONE and two.state in DONE) and now < 10:
        transfer(one, receiver, now, addr=PEER)
        transfer(two, receiver, now, addr=OTHER_PEER)
        for core in (one, two, receiver):
            core.handle_timer(now)
        now += 0.001
    assert finished(one).result.bytes_received == 200_000 and one.state is SendState.FINISHED
    assert finished(two).result.bytes_received == 120_000 and two.state is SendState.FINISHED
    ended = [e for e in drain(receiver) if isinstance(e, SessionFinished)]
    assert {e.peer for e in ended} == {PEER, OTHER_PEER}
    assert all(e.result.status is Status.COMPLETE for e in ended)


def test_a_start_beyond_the_session_cap_is_rejected() -> None:
    receiver = BenchmarkReceiver(max_sessions=1)
    first, second = sender_for(100_000, session_id=1), sender_for(100_000, session_id=2)
    transfer(first, receiver, 0.0)
    transfer(second, receiver, 0.0)
    assert second.state is SendState.FAILED and "busy" in drain(second)[0].reason
    assert receiver.ignored["session_cap"] == 1 and len(receiver.sessions) == 1


def test_a_silent_sender_is_abandoned_and_its_memory_freed() -> None:
    sender, receiver = sender_for(10_000_000, rate=1e6), BenchmarkReceiver(idle_timeout=2.0)
    run(sender, receiver, until=0.5)
    receiver.handle_timer(2.4)
    assert len(receiver.sessions) == 1
    receiver.handle_timer(2.6)
    closed = drain(receiver)[-1]
    assert isinstance(closed, SessionFinished) and closed.result.status is Status.ABANDONED
    assert receiver.sessions == {} and receiver.get_timer() is None


def test_a_streamed_download_is_sent_as_it_arrives() -> None:
    body = GeneratedPayload(50_000, seed=9).read(50_000)
    source = StreamedPayload()
    sender = BenchmarkSender(3, source, 0.0, rate=10e6)
    receiver = BenchmarkReceiver()
    transfer(sender, receiver, 0.0)  # START, answered
    assert sender.state is SendState.SENDING and sender.datagrams_to_send(0.01) == []
    assert sender.get_timer() == pytest.approx(0.26)  # starved: no pacing timer, only progress
    for offset in range(0, len(body), 7000):
        source.feed(body[offset:offset + 7000])
        transfer(sender, receiver, 0.02 + offset / 1e6)
    source.end()
    run(sender, receiver, 0.1)
    done = finished(sender)
    assert done.sha256_match and done.result.bytes_received == len(body)


def test_a_file_is_sent_whole() -> None:
    body = bytes(range(256)) * 400
    sender = BenchmarkSender(4, FilePayload(io.BytesIO(body), len(body)), 0.0, rate=10e6)
    run(sender, BenchmarkReceiver())
    assert finished(sender).sha256 == hashlib.sha256(body).digest()


@pytest.mark.parametrize("rate", [1e6, 5e6])
def test_pacing_keeps_to_the_target_rate(rate: float) -> None:
    sender, log = sender_for(500_000, rate=rate), []
    run(sender, BenchmarkReceiver(), log=log)
    data = [(t, len(d)) for t, d in log if seq_of(d) is not None]
    start, sent = data[0][0], 0
    for t, size in data:
        sent += size
        assert sent <= rate * (t - start + 0.004) + 1200  # at most BURST of credit ahead
    assert sent / (data[-1][0] - start) == pytest.approx(rate, rel=0.03)


def policer(capacity: float) -> tuple[Mangle, list[float]]:
    """A link that drops what exceeds ``capacity`` bytes/s (a 30 kB bucket); needs the clock."""
    state = {"tokens": 30_000.0, "at": 0.0}
    clock = [0.0]

    def mangle(datagrams: list[bytes]) -> list[bytes]:
        now = clock[0]
        state["tokens"] = min(30_000.0, state["tokens"] + (now - state["at"]) * capacity)
        state["at"] = now
        kept = []
        for d in datagrams:
            if len(d) <= state["tokens"] or seq_of(d) is None:
                state["tokens"] -= len(d) if seq_of(d) is not None else 0
                kept.append(d)
        return kept
    return mangle, clock


def test_adaptive_pacing_settles_near_the_path_capacity() -> None:
    capacity = 4e6
    mangle, clock = policer(capacity)
    sender, receiver, now = sender_for(6_000_000, rate=None), BenchmarkReceiver(), 0.0
    rates = []
    while sender.state not in DONE and now < 30:
        clock[0] = now
        transfer(sender, receiver, now, mangle=mangle)
        sender.handle_timer(now)
        receiver.handle_timer(now)
        rates.append(sender.pacer.rate)
        now += 0.0005
    result = finished(sender).result
    assert result.goodput == pytest.approx(capacity, rel=0.25)
    assert result.lost < 0.1 * result.chunks
    assert max(rates) < 2.5 * capacity


def test_frames_round_trip_with_golden_bytes() -> None:
    end = frames.End(0x01020304, 3, 3000, bytes(range(32)))
    assert frames.encode(end) == (bytes.fromhex("0e0103" "01020304" "ffffffff" "00000003"
                                                "0000000000000bb8") + bytes(range(32)))
    assert frames.encode(frames.Data(1, 2, b"xy")) == bytes.fromhex("0e0102" "00000001"
                                                                    "00000002") + b"xy"
    for frame in (frames.Start(9, frames.UNKNOWN_SIZE, MAX_CHUNK), frames.Cancel(9),
                  frames.Report(9, 1, 2, 3, 4, 5),
                  frames.Result(9, Status.CORRUPT, 1, 2, 3, 4, 5, 6, bytes(32)), end):
        assert frames.decode(frames.encode(frame)) == frame


def test_the_first_byte_is_neither_stun_nor_quic_nor_a_worker_frame() -> None:
    datagram = frames.encode(frames.Cancel(1))
    assert 4 <= datagram[0] <= 15 and datagram[0] != FRAME_MAGIC
    assert not chr(datagram[0]).isspace()
    assert classify(datagram) is DatagramKind.BENCHMARK


def test_invalid_frames_are_our_misuse() -> None:
    for frame in (frames.Data(1, frames.END_MARKER, b"x"), frames.Data(1, 0, b"x" * 1190),
                  frames.Start(1, 10, 0), frames.End(1, 1, 1, b"short"), frames.Cancel(-1)):
        with pytest.raises(UsageError):
            frames.encode(frame)


@given(st.binary(max_size=1300))
def test_any_bytes_decode_to_a_frame_or_a_decode_error(data: bytes) -> None:
    try:
        frame = frames.decode(data)
    except DecodeError:
        return
    assert frames.encode(frame) == data


@given(st.binary(min_size=3, max_size=80), st.integers(0, 255))
def test_any_bytes_behind_our_prefix_decode_or_raise_decode_error(tail: bytes, tag: int) -> None:
    data = bytes((frames.BENCH_MAGIC, frames.BENCH_VERSION, tag % 8)) + tail
    try:
        assert frames.encode(frames.decode(data)) == data
    except DecodeError:
        pass


@given(st.lists(st.binary(max_size=60), max_size=30))
def test_hostile_datagrams_never_disturb_a_running_session(junk: list[bytes]) -> None:
    prefix = bytes((frames.BENCH_MAGIC, frames.BENCH_VERSION))
    forged = [frames.encode(frames.End(7, 1, 1, bytes(32))),  # from a stranger: no session
              frames.encode(frames.Data(8, 0, b"x")), prefix + b"\x02\x00\x00\x00\x07"]
    sender, receiver = sender_for(30_000), BenchmarkReceiver()

    def with_junk(datagrams: list[bytes]) -> list[bytes]:
        for d in [*junk, *forged, *(prefix + j for j in junk)]:
            receiver.receive_datagram(d, OTHER_PEER, 0.0)
            receiver.receive_datagram(d[:5], PEER, 0.0)
        return datagrams
    run(sender, receiver, mangle=with_junk)
    assert finished(sender).sha256_match
    assert receiver.ignored["undecodable"] > 0 and receiver.ignored["unknown_session"] > 0


def test_a_huge_seq_jump_costs_at_most_one_window() -> None:
    window = ReceiveWindow()
    window.accept(0, b"a")
    window.accept(frames.END_MARKER - 1, b"b")
    assert window.lost == frames.END_MARKER - 1 - REORDER_WINDOW
    window.finish(frames.END_MARKER)
    assert window.lost == frames.END_MARKER - 2 and window.chunks == 2
    assert window.digest(frames.END_MARKER) is None


def test_reordering_deeper_than_the_hash_buffer_is_counted_but_unverified() -> None:
    count = HASH_BUFFER // MAX_CHUNK + 10
    window = ReceiveWindow()
    for seq in range(1, count):
        window.accept(seq, b"z" * MAX_CHUNK)
    window.accept(0, b"z" * MAX_CHUNK)
    window.finish(count)
    assert window.lost == 0 and window.chunks == count and window.digest(count) is None


def test_a_chunk_later_than_the_window_is_stale() -> None:
    window = ReceiveWindow()
    window.accept(REORDER_WINDOW + 5, b"x")
    window.accept(3, b"x")
    assert window.stale == 1 and window.lost == 6 and window.chunks == 1


def test_receiver_progress_is_one_event_per_session() -> None:
    sender, receiver = sender_for(500_000, rate=1e6), BenchmarkReceiver()
    run(sender, receiver, until=0.45)
    progress = [e for e in drain(receiver) if isinstance(e, ReceiveProgress)]
    assert len(progress) == 1 and progress[0].bytes_received > 300_000


def test_the_sender_state_table_refuses_illegal_transitions() -> None:
    sender = sender_for(10)
    run(sender, BenchmarkReceiver())
    with pytest.raises(IllegalTransition):
        sender._transition(SendState.SENDING)


@given(st.lists(st.integers(1, 500), min_size=1, max_size=40))
def test_a_quic_stream_verifies_in_any_slicing(cuts: list[int]) -> None:
    body = GeneratedPayload(5000, seed=1).read(5000)
    stream = stream_header(len(body), hashlib.sha256(body).digest()) + body
    check, offset = StreamCheck(), 0
    for cut in cuts * 20:
        check.feed(stream[offset:offset + cut])
        offset += cut
    check.feed(stream[offset:])
    verdict = check.verdict()
    assert verdict.sha256_match and verdict.bytes_received == len(body)


def test_a_quic_stream_longer_or_shorter_than_announced_fails() -> None:
    check = StreamCheck()
    check.feed(stream_header(3, bytes(32)) + b"abc")
    assert not check.verdict().sha256_match
    with pytest.raises(FrameTooLarge):
        check.feed(b"d")
    with pytest.raises(DecodeError):
        StreamCheck().verdict()
    with pytest.raises(DecodeError):
        StreamCheck().feed(b"nope" + bytes(40))
