"""Actor runtime benchmark: tell throughput, ask round trip and restart latency, each against a
baseline measured in the same run.

    python bench/actors.py [--messages 200000] [--asks 2000] [--restarts 20]

Baselines: a raw multiprocessing Pipe between two forkserver processes carrying the same msgpack
frames (throughput, round trip), the same echo over a bare Unix datagram socket (the transport
the mailboxes use; on Linux its wake-ups cost about twice a stream socket's), and the bare start
of a forkserver process (restart latency).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import msgpack  # noqa: E402

from actors import ChildSpec, SupervisorSpec, run_root  # noqa: E402
from actors.client import Client  # noqa: E402
from actors.tree import PRELOAD  # noqa: E402
from messages.codec import encode_envelope  # noqa: E402
from messages.runtime import Probe, ProbeBurst  # noqa: E402
from tests.support.probes import (  # noqa: E402
    baseline_dgram_echo,
    baseline_echo,
    baseline_ready,
    baseline_sink,
)

SPEC = SupervisorSpec("bench", (ChildSpec("p1", "tests.support.probes:ProbeActor"),
                                ChildSpec("p2", "tests.support.probes:ProbeActor")),
                    # the restart benchmark kills p2 on purpose, often: no intensity limit, no
                    # backoff, so each sample is the bare restart path
                    max_restarts=1000, backoff=0.0)
FRAME = msgpack.packb([encode_envelope(Probe("bench/p1", 12345))], use_bin_type=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- baselines ------------------------------------------------------------------------------------
def raw_throughput(ctx, n: int) -> float:  # noqa: ANN001
    a, b = ctx.Pipe()
    proc = ctx.Process(target=baseline_sink, args=(b, n))
    proc.start()
    start = time.perf_counter()
    for _ in range(n):
        a.send_bytes(msgpack.packb(msgpack.unpackb(FRAME)))
    a.recv_bytes()
    elapsed = time.perf_counter() - start
    proc.join()
    return n / elapsed


def raw_round_trips(ctx, n: int) -> list[float]:  # noqa: ANN001
    a, b = ctx.Pipe()
    proc = ctx.Process(target=baseline_echo, args=(b,))
    proc.start()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        a.send_bytes(FRAME)
        msgpack.unpackb(a.recv_bytes())
        times.append(time.perf_counter() - start)
    a.send_bytes(b"stop")
    proc.join()
    return times


def raw_dgram_round_trips(ctx, n: int) -> list[float]:  # noqa: ANN001
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    proc = ctx.Process(target=baseline_dgram_echo, args=(b,))
    proc.start()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        a.send(FRAME)
        msgpack.unpackb(a.recv(65536))
        times.append(time.perf_counter() - start)
    a.send(b"stop")
    proc.join()
    return times


def bare_starts(ctx, n: int) -> list[float]:  # noqa: ANN001
    times = []
    for _ in range(n):
        a, b = ctx.Pipe()
        start = time.perf_counter()
        proc = ctx.Process(target=baseline_ready, args=(b,))
        proc.start()
        a.recv_bytes()
        times.append(time.perf_counter() - start)
        proc.join()
    return times


# -- the runtime ----------------------------------------------------------------------------------
def tell_batched(client: Client, n: int) -> float:
    start = time.perf_counter()
    client.ask("bench/p1", ProbeBurst("bench/p2", n), timeout=300)
    return n / (time.perf_counter() - start)


def tell_single(client: Client, n: int) -> float:
    start = time.perf_counter()
    for seq in range(n):
        client.tell("bench/p2", Probe("c", seq))
    client.ask("bench/p2", Probe("c", n), timeout=300)
    return n / (time.perf_counter() - start)


def ask_round_trips(client: Client, n: int) -> list[float]:
    times = []
    for seq in range(n):
        start = time.perf_counter()
        client.ask("bench/p2", Probe("rtt", seq))
        times.append(time.perf_counter() - start)
    return times


def restarts(client: Client, n: int) -> list[float]:
    times = []
    pid = client.node("bench", "bench/p2")["pid"]
    for seq in range(n):
        start = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        client.ask("bench/p2", Probe("restart", seq), timeout=10)
        times.append(time.perf_counter() - start)
        pid = settled_pid(client, pid)
    return times


def settled_pid(client: Client, killed: int) -> int:
    """The new incarnation's pid, once its supervisor has recorded it (it may answer a message a
    moment before the supervisor's bookkeeping of the restart is done)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        node = client.node("bench", "bench/p2")
        if node["pid"] not in (0, killed) and node["state"] == "running":
            return node["pid"]
    raise SystemExit("the supervisor did not record the restart within 10 s")


def serve(workdir: str) -> None:
    sys.exit(run_root(SPEC, rundir=os.path.join(workdir, "run"),
                      on_ready=lambda _t: print("READY", flush=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--asks", type=int, default=2000)
    parser.add_argument("--restarts", type=int, default=20)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)  # the same start path the runtime's children take
    workdir = tempfile.mkdtemp(prefix="bench-actors-")
    tree = subprocess.Popen([sys.executable, __file__, "--serve", workdir],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert tree.stdout is not None and tree.stdout.readline().strip() == "READY"
        client = Client(os.path.join(workdir, "run"))
        report(ctx, client, args)
    finally:
        tree.send_signal(signal.SIGINT)
        tree.wait(30)


def report(ctx, client: Client, args: argparse.Namespace) -> None:  # noqa: ANN001
    n = args.messages
    print(f"tell throughput, {n} messages")
    raw = raw_throughput(ctx, n)
    batched, single = tell_batched(client, n), tell_single(client, n // 4)
    print(f"  raw Pipe + msgpack        {raw:12,.0f} msg/s")
    print(f"  actor -> actor (batched)  {batched:12,.0f} msg/s   ratio {batched / raw:.2f}")
    print(f"  client -> actor (1/send)  {single:12,.0f} msg/s   ratio {single / raw:.2f}")
    print(f"ask round trip, {args.asks} asks")
    raw_rtt = raw_round_trips(ctx, args.asks)
    dgram_rtt = raw_dgram_round_trips(ctx, args.asks)
    rtt = ask_round_trips(client, args.asks)
    for label, t in (("raw Pipe echo", raw_rtt), ("raw unix datagram echo", dgram_rtt),
                     ("actor ask", rtt)):
        print(f"  {label:<24}  median {statistics.median(t) * 1e6:7.1f} us   "
              f"p95 {pct(t, 0.95) * 1e6:7.1f} us")
    median = statistics.median(rtt)
    print(f"  ratio (median)            {median / statistics.median(raw_rtt):.2f} vs the Pipe, "
          f"{median / statistics.median(dgram_rtt):.2f} vs a bare datagram socket (the "
          f"mailboxes' transport)")
    print(f"restart latency, {args.restarts} kills (kill -9 -> handling messages again)")
    bare, rst = bare_starts(ctx, args.restarts), restarts(client, args.restarts)
    for label, t in (("bare forkserver start", bare), ("actor restart", rst)):
        print(f"  {label:<24}  median {statistics.median(t) * 1e3:7.1f} ms   "
              f"p95 {pct(t, 0.95) * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
