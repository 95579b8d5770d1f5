"""Benchmark runs on a tunnel stream (protocol.tunnel.bench), two tunnels paired in memory."""

from __future__ import annotations

import hashlib

import pytest

from messages.errors import UsageError
from protocol.benchmark.payload import GeneratedPayload
from protocol.benchmark.stream import stream_header
from protocol.tunnel import bench
from protocol.tunnel.connection import Tunnel
from protocol.tunnel.events import BenchStreamAnswered, BenchStreamFailed, BenchStreamReceived
from tests.protocol.test_tunnel import events, ids, run, up  # noqa: F401  (ids: a fixture)


def send(sender: Tunnel, receiver: Tunnel, session_id: int, payload: bytes,
         announced: bytes | None = None, now: float = 1.0) -> float:
    digest = announced or hashlib.sha256(payload).digest()
    data = stream_header(len(payload), digest) + payload
    for start in range(0, len(data), 32 * 1024):
        piece = data[start:start + 32 * 1024]
        sender.bench_write(session_id, piece, start + len(piece) == len(data), now)
        now = run(sender, receiver, now, now + 0.5)
    return run(sender, receiver, now, now + 2.0)


@pytest.mark.parametrize("direction", ["client to server", "server to client"])
def test_a_run_arrives_whole_and_both_sides_agree_on_its_sha256(ids, direction):  # noqa: F811
    client, server = up(ids)
    sender, receiver = (client, server) if direction == "client to server" else (server, client)
    payload = GeneratedPayload(300_000, seed=1).read(300_000)
    send(sender, receiver, 7, payload)
    [answered] = events(sender)
    [received] = events(receiver)
    digest = hashlib.sha256(payload).digest()
    assert isinstance(answered, BenchStreamAnswered) and answered.session_id == 7
    assert answered.bytes_received == len(payload) and answered.sha256 == digest
    assert isinstance(received, BenchStreamReceived) and received.verdict is not None
    assert received.verdict.sha256_match and received.verdict.bytes_received == len(payload)
    assert sender.bench_unsent(7) is None  # the run's stream is closed
    assert client.state.value == server.state.value == "up"


def test_a_wrong_announced_digest_is_reported_as_a_mismatch(ids):  # noqa: F811
    client, server = up(ids)
    send(client, server, 1, b"x" * 5000, announced=bytes(32))
    [answered] = events(client)
    [received] = events(server)
    assert answered.sha256 == hashlib.sha256(b"x" * 5000).digest()
    assert not received.verdict.sha256_match and received.verdict.complete


def test_cancel_resets_the_stream_and_the_receiver_says_so(ids):  # noqa: F811
    client, server = up(ids)
    client.bench_write(3, stream_header(10**6, bytes(32)) + b"y" * 1000, False, 1.0)
    run(client, server, 1.0, 1.5)
    client.bench_cancel(3)
    run(client, server, 1.5, 2.5)
    [received] = events(server)
    assert received.verdict is None and "reset" in received.reason
    assert events(client) == []
    with pytest.raises(UsageError):
        client.bench_write(3, b"more", False, 3.0)  # the run is gone from this tunnel


def test_a_dropped_tunnel_ends_open_runs_on_both_sides(ids):  # noqa: F811
    client, server = up(ids)
    client.bench_write(4, stream_header(10**6, bytes(32)) + b"z" * 1000, False, 1.0)
    run(client, server, 1.0, 1.5)
    server.abandon("the peer opened a new QUIC connection")
    [received] = events(server)
    assert received.verdict is None and "replaced" in received.reason
    client.close("bye")
    run(client, server, 1.5, 5.0)
    failed = [e for e in events(client) if isinstance(e, BenchStreamFailed)]
    assert failed and failed[0].session_id == 4


def test_streams_beyond_the_limit_are_refused_without_harm(ids, monkeypatch):  # noqa: F811
    monkeypatch.setattr(bench, "MAX_INCOMING", 2)
    client, server = up(ids)
    for session_id in range(3):
        client.bench_write(session_id, stream_header(100, bytes(32)) + b"a", False, 1.0)
    run(client, server, 1.0, 2.0)
    failed = [e for e in events(client) if isinstance(e, BenchStreamFailed)]
    assert [e.session_id for e in failed] == [2]
    assert client.state.value == server.state.value == "up"
