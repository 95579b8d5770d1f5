"""Loopback throughput baselines, and the benchmark core on a real UDP socket pair.

Each measure runs a few seconds, in two processes (one sends, one receives: the machine's two
cores), and returns a ``Measure``:

- ``raw_udp``: a bare Python socket blasting 1200-byte datagrams; the ceiling for Python.
- ``iperf3_udp``: ``iperf3 -u -l 1200`` at an offered rate; what C achieves on the same path.
- ``sansio_udp``: ``protocol.benchmark``'s sender and receiver behind uvloop datagram transports
  (the shells below are the shape of the worker's future benchmark actor: feed, drain, re-arm).
- ``aioquic_stream``: a bare aioquic client and server (uvloop) moving N MB on one stream,
  checked with ``protocol.benchmark.stream``; the ceiling for the QUIC tunnel.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import multiprocessing
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol.benchmark import frames  # noqa: E402
from protocol.benchmark.events import (  # noqa: E402
    SendFailed,
    SendFinished,
    SendProgress,
    SessionFinished,
)
from protocol.benchmark.payload import GeneratedPayload  # noqa: E402
from protocol.benchmark.receiver import BenchmarkReceiver  # noqa: E402
from protocol.benchmark.sender import BenchmarkSender  # noqa: E402
from protocol.benchmark.stream import StreamCheck, stream_header  # noqa: E402

MB = 1_000_000
DATAGRAM = 1200
SPAWN = multiprocessing.get_context("spawn")
SOCKET_BUFFER = 4 * 1024 * 1024


@dataclass
class Measure:
    name: str
    mb_per_s: float
    loss: float | None = None  # fraction of datagrams lost
    detail: str = ""
    series: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MB/s)


def free_port() -> int:
    """A port free for both UDP and TCP (iperf3 uses one number for both)."""
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        port = tcp.getsockname()[1]
        udp.bind(("127.0.0.1", port))
        return port


def progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


# -- (c) a raw Python socket pair ------------------------------------------------------------

def _raw_receive(port: int, ready: multiprocessing.connection.Connection) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    sock.bind(("127.0.0.1", port))
    ready.send("ready")
    count, first, last = 0, 0.0, 0.0
    sock.settimeout(5.0)
    try:
        while True:
            data = sock.recv(2048)
            last = time.monotonic()
            if count == 0:
                first, _ = last, sock.settimeout(0.3)
            if data == b"end":
                break
            count += 1
    except TimeoutError:
        pass
    ready.send((count, last - first))


def raw_udp(seconds: float = 2.0) -> Measure:
    port, (here, there) = free_port(), SPAWN.Pipe()
    child = SPAWN.Process(target=_raw_receive, args=(port, there))
    child.start()
    here.recv()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload, sent, deadline = b"x" * DATAGRAM, 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(256):
            sock.sendto(payload, ("127.0.0.1", port))
        sent += 256
    for _ in range(3):
        sock.sendto(b"end", ("127.0.0.1", port))
    received, duration = here.recv()
    child.join(5)
    return Measure("raw Python UDP socket pair", received * DATAGRAM / duration / MB,
                   1 - received / sent, f"{sent} sent, {received} received")


# -- (b) iperf3 ------------------------------------------------------------------------------

def iperf3_udp(rate_mb: float, seconds: float = 3.0) -> Measure:
    port = free_port()
    server = subprocess.Popen(["iperf3", "-s", "-1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):  # the server is up when the client's control connection succeeds
            out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-u", "-l",
                                  str(DATAGRAM), "-b", str(int(rate_mb * MB * 8)), "-t",
                                  str(seconds), "-i", "0.2", "--json"],
                                 capture_output=True, text=True, timeout=seconds + 15)
            report = json.loads(out.stdout or "{}")
            if "end" in report and "sum_received" in report["end"]:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"iperf3 did not run: {out.stdout[-400:]} {out.stderr[-400:]}")
    finally:
        server.wait(timeout=10) if server.poll() is None else None
    end = report["end"]
    goodput = end["sum_received"]["bytes"] / end["sum_received"]["seconds"] / MB
    series = [(i["sum"]["end"], i["sum"]["bytes"] / i["sum"]["seconds"] / MB)
              for i in report["intervals"]]
    return Measure(f"iperf3 -u -l 1200 at {rate_mb:g} MB/s", goodput,
                   end["sum"]["lost_percent"] / 100,
                   f"{end['sum']['packets']} datagrams", series)


# -- (d) the sans-I/O core behind uvloop datagram transports ---------------------------------

class _Shell(asyncio.DatagramProtocol):
    """Feeds datagrams in, drains datagrams out, re-arms the core's one timer."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is no subclass

    def pump(self) -> None:
        for _ in range(32):  # then yield to the loop, so received reports get in
            now = self.loop.time()
            self.handle_timer(now)
            self.send(now)
            self.take_events()
            timer = self.get_timer()
            if timer is None or timer > self.loop.time():
                break
        if self._timer is not None:
            self._timer.cancel()
        timer = self.get_timer()
        if timer is not None:
            self._timer = self.loop.call_at(timer, self.pump)

    def handle_timer(self, now: float) -> None: ...
    def send(self, now: float) -> None: ...
    def take_events(self) -> None: ...
    def get_timer(self) -> float | None: ...


class SenderShell(_Shell):
    def __init__(self, core: BenchmarkSender, peer: tuple[str, int]) -> None:
        super().__init__()
        self.core, self.peer = core, peer
        self.done: asyncio.Future[SendFinished | SendFailed] = self.loop.create_future()
        self.series: list[tuple[float, float]] = []
        self._started = self.loop.time()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.core.receive_datagram(data, self.loop.time())
        self.pump()

    def handle_timer(self, now: float) -> None:
        self.core.handle_timer(now)

    def send(self, now: float) -> None:
        assert self.transport is not None
        for datagram in self.core.datagrams_to_send(now):
            self.transport.sendto(datagram, self.peer)

    def get_timer(self) -> float | None:
        return self.core.get_timer()

    def take_events(self) -> None:
        while (event := self.core.next_event()) is not None:
            if isinstance(event, SendProgress):
                self._sample(event)
            elif isinstance(event, SendFinished | SendFailed) and not self.done.done():
                self.done.set_result(event)

    def _sample(self, event: SendProgress) -> None:
        if event.receiver_goodput is not None:
            self.series.append((self.loop.time() - self._started, event.receiver_goodput / MB))


class ReceiverShell(_Shell):
    def __init__(self, core: BenchmarkReceiver) -> None:
        super().__init__()
        self.core = core
        self.finished: asyncio.Future[SessionFinished] = self.loop.create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.core.receive_datagram(data, addr, self.loop.time())
        if data[2] != frames.BenchType.DATA:  # DATA only counts: the report timer is armed
            self.pump()

    def handle_timer(self, now: float) -> None:
        self.core.handle_timer(now)

    def send(self, now: float) -> None:
        assert self.transport is not None
        for datagram, addr in self.core.datagrams_to_send(now):
            self.transport.sendto(datagram, addr)

    def get_timer(self) -> float | None:
        return self.core.get_timer()

    def take_events(self) -> None:
        while (event := self.core.next_event()) is not None:
            if isinstance(event, SessionFinished) and not self.finished.done():
                self.finished.set_result(event)


def _buffered_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
    sock.bind(("127.0.0.1", port))
    return sock


def _sansio_receive(port: int, ready: multiprocessing.connection.Connection) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        _, shell = await loop.create_datagram_endpoint(
            lambda: ReceiverShell(BenchmarkReceiver()), sock=_buffered_socket(port))
        ready.send("ready")
        finished = await asyncio.wait_for(shell.finished, 60)
        await asyncio.sleep(0.5)  # answer repeated end markers whose RESULT was lost
        ready.send(finished.result)
    uvloop.run(main())


async def _sansio_send(port: int, rate_mb: float | None, size: int) -> SenderShell:
    loop = asyncio.get_running_loop()
    core = BenchmarkSender(0x5EED, GeneratedPayload(size), loop.time(),
                           rate=None if rate_mb is None else rate_mb * MB,
                           progress_interval=0.1)
    _, shell = await loop.create_datagram_endpoint(
        lambda: SenderShell(core, ("127.0.0.1", port)), sock=_buffered_socket())
    shell.pump()
    await asyncio.wait_for(shell.done, 60)
    return shell


def sansio_udp(rate_mb: float | None, seconds: float = 3.0) -> Measure:
    """The core over loopback; ``rate_mb`` None paces adaptively (from 2 MB/s up)."""
    size = int((rate_mb or 60) * MB * seconds)
    port, (here, there) = free_port(), SPAWN.Pipe()
    child = SPAWN.Process(target=_sansio_receive, args=(port, there))
    child.start()
    here.recv()
    shell = uvloop.run(_sansio_send(port, rate_mb, size))
    outcome = shell.done.result()
    result = here.recv() if here.poll(10) else None
    child.join(5)
    label = "adaptive" if rate_mb is None else f"at {rate_mb:g} MB/s"
    if isinstance(outcome, SendFailed) or result is None:
        reason = outcome.reason if isinstance(outcome, SendFailed) else "no result"
        return Measure(f"sans-I/O benchmark {label}", 0.0, None, reason, shell.series)
    loss = result.lost / (result.chunks + result.lost) if result.chunks else 1.0
    match = outcome.sha256_match
    return Measure(f"sans-I/O benchmark {label}", result.goodput / MB, loss,
                   f"{result.status.name.lower()}, SHA-256 match: {match}, "
                   f"final rate {shell.core.pacer.rate / MB:.0f} MB/s", shell.series)


# -- (a) bare aioquic on one stream ----------------------------------------------------------

def _quic_configs(directory: str) -> tuple[object, object]:
    from aioquic.quic.configuration import QuicConfiguration

    from protocol.certs import generate_self_signed

    cert, key = generate_self_signed("bench")
    Path(directory, "cert.pem").write_bytes(cert)
    Path(directory, "key.pem").write_bytes(key)
    server = QuicConfiguration(is_client=False, alpn_protocols=["hp-bench"])
    server.load_cert_chain(Path(directory, "cert.pem"), Path(directory, "key.pem"))
    client = QuicConfiguration(is_client=True, alpn_protocols=["hp-bench"],
                               verify_mode=ssl.CERT_NONE)
    return server, client


def _quic_serve(port: int, directory: str, ready: multiprocessing.connection.Connection) -> None:
    from aioquic.asyncio import QuicConnectionProtocol, serve
    from aioquic.quic.events import StreamDataReceived

    class Server(QuicConnectionProtocol):
        check = StreamCheck()

        def quic_event_received(self, event: object) -> None:
            if isinstance(event, StreamDataReceived):
                self.check.feed(event.data)
                if event.end_stream:
                    verdict = self.check.verdict()
                    self._quic.send_stream_data(event.stream_id, b"OK" if verdict.sha256_match
                                                else b"BAD", end_stream=True)
                    self.transmit()

    async def main() -> None:
        server_config, _ = _quic_configs(directory)
        await serve("127.0.0.1", port, configuration=server_config, create_protocol=Server)
        ready.send("ready")
        await asyncio.sleep(120)
    uvloop.run(main())


async def _quic_send(port: int, directory: str, size: int) -> tuple[float, bytes]:
    from aioquic.asyncio import QuicConnectionProtocol, connect
    from aioquic.quic.events import StreamDataReceived

    class Client(QuicConnectionProtocol):
        reply: asyncio.Future[bytes]

        def quic_event_received(self, event: object) -> None:
            if isinstance(event, StreamDataReceived) and event.end_stream:
                self.reply.set_result(event.data)

    _, client_config = _quic_configs(directory)
    payload = GeneratedPayload(size).read(size)
    async with connect("127.0.0.1", port, configuration=client_config,
                       create_protocol=Client) as client:
        assert isinstance(client, Client)
        client.reply = asyncio.get_running_loop().create_future()
        started = time.monotonic()
        stream = client._quic.get_next_available_stream_id()
        client._quic.send_stream_data(stream, stream_header(size, hashlib.sha256(payload)
                                                            .digest()) + payload, end_stream=True)
        client.transmit()
        reply = await asyncio.wait_for(client.reply, 60)
        return time.monotonic() - started, reply


def aioquic_stream(mbytes: float = 20.0) -> Measure:
    port, (here, there) = free_port(), SPAWN.Pipe()
    with tempfile.TemporaryDirectory() as directory:
        child = SPAWN.Process(target=_quic_serve, args=(port, directory, there))
        child.start()
        try:
            here.recv()
            elapsed, reply = uvloop.run(_quic_send(port, directory, int(mbytes * MB)))
        finally:
            child.terminate()
            child.join(5)
    return Measure("bare aioquic, one stream (uvloop)", mbytes / elapsed, None,
                   f"{mbytes:g} MB in {elapsed:.2f} s, end-to-end SHA-256: {reply.decode()}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    for measure in (raw_udp(), iperf3_udp(40), sansio_udp(40), aioquic_stream(10)):
        print(f"{measure.name}: {measure.mb_per_s:.1f} MB/s loss {measure.loss} {measure.detail}")
