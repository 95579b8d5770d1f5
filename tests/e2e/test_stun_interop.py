"""STUN against servers and clients no one here wrote, all on 127.0.0.0/8.

(a) coturn (RFC 5389) answers StunTransaction; (b) stund (RFC 3489, two addresses) answers a
classic StunTransaction and pystun3's NAT tests through ForwardingSocket; (c) our responder
answers coturn's turnutils_stunclient and pystun3's get_ip_info. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import stun

from actors.rendezvous.stun import StunResponder, serve_stun
from actors.worker.stun_socket import INBOX_SIZE, ForwardingSocket, detect_nat_type
from messages.errors import UsageError
from protocol.stun import (
    BINDING,
    StunClass,
    StunMessage,
    binding_response,
    parse_message,
    serialize_message,
)
from protocol.stun.client import BindingEvent, BindingSucceeded, StunTransaction
from tests.support.processes import within

WAIT = within(5.0)  # the bound on every startup, transaction and thread join here
STUND = "/usr/sbin/stund"

Address = tuple[str, int]


def free_udp_port(*hosts: str) -> int:
    """A port that is free right now on every host in ``hosts`` (retries are cheap)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        try:
            for host in hosts:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
                    other.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError(f"no UDP port free on all of {hosts}")


@pytest.fixture
def udp_socket() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock


def run_transaction(transaction: StunTransaction, sock: socket.socket) -> BindingEvent:
    """The smallest blocking shell: send, wait until the timer, feed what arrives."""
    deadline = time.monotonic() + WAIT
    while (event := transaction.next_event()) is None:
        now = time.monotonic()
        assert now < deadline, "the STUN transaction did not end in time"
        for data, addr in transaction.datagrams_to_send(now):
            sock.sendto(data, addr)
        sock.settimeout(max(0.001, min(transaction.get_timer() or deadline, deadline) - now))
        try:
            data, addr = sock.recvfrom(2048)
        except TimeoutError:
            transaction.handle_timer(time.monotonic())
        else:
            transaction.receive_datagram(data, addr, time.monotonic())
    return event


def wait_until_answering(server: Address, process: subprocess.Popen[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and process.poll() is None:
            probe = StunTransaction(server, time.monotonic(), rto=0.05, max_transmits=2,
                                    last_wait_factor=2)
            if isinstance(run_transaction(probe, sock), BindingSucceeded):
                return
    pytest.fail(f"STUN server {server} not answering (exit code {process.poll()})")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(WAIT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(WAIT)


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[Address]:
    if shutil.which("turnserver") is None:
        pytest.skip("coturn's turnserver is not installed (apt-get install coturn)")
    port = free_udp_port("127.0.0.1")
    config = tmp_path / "turnserver.conf"
    config.write_text("\n".join([
        "listening-ip=127.0.0.1", f"listening-port={port}", "stun-only", "no-tls", "no-dtls",
        "no-cli", "no-auth", "log-file=stdout", "simple-log", f"userdb={tmp_path / 'turndb'}",
        f"pidfile={tmp_path / 'turnserver.pid'}", ""]))
    with open(tmp_path / "turnserver.log", "wb") as log:
        process = subprocess.Popen(["turnserver", "-c", str(config)], stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        wait_until_answering(("127.0.0.1", port), process)
        yield ("127.0.0.1", port)
    finally:
        stop(process)


@pytest.fixture
def stund(tmp_path: Path) -> Iterator[Address]:
    if not Path(STUND).exists():
        pytest.skip(f"{STUND} is not installed (apt-get install stun-server)")
    try:
        port, other_port = free_udp_port("127.0.0.1", "127.0.0.2"), free_udp_port("127.0.0.2")
    except OSError as error:
        pytest.skip(f"127.0.0.2 is not usable on this loopback: {error}")
    with open(tmp_path / "stund.log", "wb") as log:
        process = subprocess.Popen(
            [STUND, "-h", "127.0.0.1", "-a", "127.0.0.2", "-p", str(port), "-o", str(other_port)],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_answering(("127.0.0.1", port), process)
        yield ("127.0.0.1", port)
    finally:
        stop(process)


class RecordingResponder:
    """Our responder in a thread of its own, with the sources it saw."""

    def __init__(self) -> None:
        self.sources: list[Address] = []
        self.responder: StunResponder | None = None
        self.address: Address = ("127.0.0.1", 0)


@pytest.fixture
def our_responder() -> Iterator[RecordingResponder]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    recording, loop, ready = RecordingResponder(), asyncio.new_event_loop(), threading.Event()
    recording.address = sock.getsockname()

    def run() -> None:
        transport, responder = loop.run_until_complete(serve_stun(sock))
        answer = responder.datagram_received

        def record(data: bytes, addr: Address) -> None:
            recording.sources.append(addr)
            answer(data, addr)

        responder.datagram_received = record  # type: ignore[method-assign]
        recording.responder = responder
        ready.set()
        loop.run_forever()
        transport.close()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()

    thread = threading.Thread(target=run, name="stun-responder", daemon=True)
    thread.start()
    assert ready.wait(WAIT), "our STUN responder did not start"
    yield recording
    loop.call_soon_threadsafe(loop.stop)
    thread.join(WAIT)
    assert not thread.is_alive()


@pytest.mark.interop
def test_coturn_maps_our_socket_to_its_own_address(coturn: Address,
                                                   udp_socket: socket.socket) -> None:
    event = run_transaction(StunTransaction(coturn, time.monotonic(), rto=0.1), udp_socket)
    assert isinstance(event, BindingSucceeded)
    assert (event.mapped, event.server) == (udp_socket.getsockname(), coturn)


@pytest.mark.interop
def test_stund_answers_a_classic_transaction_with_mapped_address(
        stund: Address, udp_socket: socket.socket) -> None:
    transaction = StunTransaction(stund, time.monotonic(), rto=0.1, classic=True)
    event = run_transaction(transaction, udp_socket)
    assert isinstance(event, BindingSucceeded)
    assert event.mapped == udp_socket.getsockname()


@pytest.mark.interop
def test_pystun3_nat_type_through_a_forwarding_socket(stund: Address,
                                                      udp_socket: socket.socket) -> None:
    local = udp_socket.getsockname()
    forwarding = ForwardingSocket(udp_socket.sendto, local, timeout=0.5)
    stopped = threading.Event()

    def pump() -> None:  # what the udp actor does with datagrams whose first byte is 0..3
        udp_socket.settimeout(0.05)
        while not stopped.is_set():
            try:
                forwarding.deliver(*udp_socket.recvfrom(2048))
            except TimeoutError:
                continue

    pumper = threading.Thread(target=pump, name="udp-pump", daemon=True)
    pumper.start()
    try:
        nat_type = detect_nat_type(forwarding, *stund)
    finally:
        stopped.set()
        pumper.join(WAIT)
    # Loopback has no NAT, and stund really answers from its other address (127.0.0.2).
    assert nat_type == (stun.OpenInternet, *local)


@pytest.mark.interop
def test_turnutils_stunclient_sees_its_own_address(our_responder: RecordingResponder) -> None:
    if shutil.which("turnutils_stunclient") is None:
        pytest.skip("coturn's turnutils_stunclient is not installed (apt-get install coturn)")
    host, port = our_responder.address
    result = subprocess.run(["turnutils_stunclient", "-p", str(port), host],
                            capture_output=True, text=True, timeout=WAIT)
    reported = re.findall(r"UDP reflexive addr: ([\d.]+):(\d+)", result.stdout)
    assert reported, result.stdout + result.stderr
    assert {(ip, int(port)) for ip, port in reported} <= set(our_responder.sources)


@pytest.mark.interop
def test_pystun3_get_ip_info_gets_the_external_address(
        our_responder: RecordingResponder) -> None:
    source_port = free_udp_port("127.0.0.1")
    nat_type, ip, port = stun.get_ip_info("127.0.0.1", source_port, *our_responder.address)
    assert (ip, port) == ("127.0.0.1", source_port)
    assert nat_type == stun.OpenInternet  # the responder cannot change address: not a real test


@pytest.mark.interop
def test_responder_counts_and_survives_bad_datagrams(our_responder: RecordingResponder,
                                                    udp_socket: socket.socket) -> None:
    indication = serialize_message(StunMessage(BINDING, StunClass.INDICATION, bytes(12)))
    for junk in (b"\x00\x01\x00", b"\xff" * 40, indication):
        udp_socket.sendto(junk, our_responder.address)
    transaction = StunTransaction(our_responder.address, time.monotonic(), rto=0.1)
    assert isinstance(run_transaction(transaction, udp_socket), BindingSucceeded)
    stats = our_responder.responder.stats  # type: ignore[union-attr]
    assert (stats.malformed, stats.ignored, stats.answered, stats.failed) == (2, 1, 1, 0)


# ForwardingSocket in memory: pystun3 talks to the responder's logic through it, no sockets.

NATTED = ("10.0.0.5", 5000)  # addresses in memory only; nothing is sent anywhere
PUBLIC = ("203.0.113.9", 6000)


def in_memory_forwarding(mapped: Address, answer_change_requests: bool) -> ForwardingSocket:
    def send(data: bytes, server: Address) -> None:
        if answer_change_requests or b"\x00\x03\x00\x04" not in data[20:]:
            forwarding.deliver(binding_response(data, mapped) or b"", server)

    forwarding = ForwardingSocket(send, NATTED, timeout=0.02)
    return forwarding


def test_pystun3_reads_the_mapping_through_a_forwarding_socket() -> None:
    forwarding = in_memory_forwarding(PUBLIC, answer_change_requests=True)
    # A one-address responder answering change requests looks like a full cone: meaningless.
    assert detect_nat_type(forwarding, "192.0.2.1", 3478) == (stun.FullCone, *PUBLIC)


def test_missing_changed_address_becomes_no_answer_not_a_crash() -> None:
    forwarding = in_memory_forwarding(PUBLIC, answer_change_requests=False)
    nat_type, _, _ = detect_nat_type(forwarding, "192.0.2.1", 3478)
    assert nat_type == stun.ChangedAddressError


def test_forwarding_socket_lets_only_binding_successes_through() -> None:
    forwarding = ForwardingSocket(lambda data, addr: None, NATTED, timeout=0.01)
    request = serialize_message(StunMessage(BINDING, StunClass.REQUEST, bytes(12)))
    refusal = serialize_message(StunMessage(BINDING, StunClass.ERROR, bytes(12)))
    success = binding_response(request, PUBLIC) or b""
    assert [forwarding.deliver(data, PUBLIC) for data in (b"\xc3junk", request, refusal,
                                                          success)] == [False] * 3 + [True]
    data, addr = forwarding.recvfrom(2048)
    assert addr == PUBLIC
    assert (data[:2], data[4:20]) == (success[:2], success[4:20])  # same type, cookie and id
    assert parse_message(data).attributes == (("MAPPED-ADDRESS", PUBLIC),)
    with pytest.raises(TimeoutError):
        forwarding.recvfrom(2048)
    assert forwarding.dropped == 3


def test_pystun3_reads_an_rfc5780_answer_it_would_crash_on() -> None:
    # Odd-length SOFTWARE (pystun3 ignores padding), XOR-MAPPED-ADDRESS only, an IPv6
    # MAPPED-ADDRESS, OTHER-ADDRESS instead of CHANGED-ADDRESS: raw, pystun3 raises ValueError.
    def send(data: bytes, server: Address) -> None:
        request = parse_message(data)
        forwarding.deliver(serialize_message(StunMessage(
            BINDING, StunClass.SUCCESS, request.transaction_id,
            (("SOFTWARE", "odd"), ("MAPPED-ADDRESS", ("2001:db8::1", 1)),
             ("XOR-MAPPED-ADDRESS", PUBLIC), ("OTHER-ADDRESS", ("192.0.2.2", 3479))),
            magic_cookie=False)), server)

    forwarding = ForwardingSocket(send, NATTED, timeout=0.02)
    assert detect_nat_type(forwarding, "192.0.2.1", 3478) == (stun.FullCone, *PUBLIC)
    assert forwarding.dropped == 0


def test_forwarding_socket_is_bounded_and_refuses_blocking_forever() -> None:
    forwarding = ForwardingSocket(lambda data, addr: None, NATTED)
    success = binding_response(serialize_message(
        StunMessage(BINDING, StunClass.REQUEST, bytes(12))), PUBLIC) or b""
    accepted = [forwarding.deliver(success, PUBLIC) for _ in range(INBOX_SIZE + 1)]
    assert accepted.count(False) == 1 and forwarding.dropped == 1
    with pytest.raises(UsageError):
        forwarding.settimeout(None)
    with pytest.raises(socket.gaierror):
        forwarding.sendto(b"x", (None, None))  # type: ignore[arg-type]
