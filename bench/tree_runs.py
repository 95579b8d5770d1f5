"""The benchmark through two real worker trees: `python supervisor.py demo` on loopback.

    python bench/tree_runs.py [--rate 40] [--udp-mb 120] [--quic-mb 20]

Starts the demo with JSON logs, reads registration -> tunnel up from them (``bench/worker.py``),
then drives alice's UI WebSocket as the page would: one UDP run paced at ``--rate`` MB/s and one
QUIC run on the tunnel, each ended by its ``benchmark_result``. CPU seconds are the user + system
time of every process of both worker trees (both ends of the run), from /proc, over the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import MB, Measure  # noqa: E402
from worker import ROOT, descendants, tunnel_latency  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: set[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / TICKS


class DemoTrees:
    def __init__(self, workdir: str) -> None:
        self.log = Path(workdir) / "demo.jsonl"
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "supervisor.py"), "demo", "--rundir",
             str(Path(workdir) / "run")], stdout=subprocess.PIPE,
            stderr=open(self.log, "w"), text=True,  # noqa: SIM115
            env={**os.environ, "P2P_LOG_FORMAT": "json"})
        self.ui: dict[str, str] = {}
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if m := re.match(r"worker (\w+) UI:\s+(\S+)/\?token=(\S+)", line):
                self.ui[m[1]] = m[2].replace("http://", "ws://") + f"/ui_ws?token={m[3]}"
            elif "demo running" in line:
                break

    def tunnel_up_ms(self, timeout: float = 30) -> float:
        deadline = time.monotonic() + timeout
        while (latency := tunnel_latency(self.log)) is None:
            if time.monotonic() > deadline:
                raise SystemExit(f"no tunnel within {timeout} s; see {self.log}")
            time.sleep(0.1)
        return latency

    def workers(self) -> set[int]:
        return descendants(self.proc.pid)  # the rendezvous service idles during a run

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


Series = list[tuple[float, float]]


async def one_run(url: str, command: dict[str, Any],
                  timeout: float) -> tuple[dict[str, Any], Series]:
    """The run's sender result, and (seconds, MB/s) from its progress."""
    async with websockets.connect(url, max_size=2**20) as ws:
        await ws.send(json.dumps(command))
        series: Series = []
        started, sid = time.monotonic(), None
        deadline = started + timeout
        while time.monotonic() < deadline:
            event = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
            if event.get("role") != "sender":
                continue
            if event["type"] == "benchmark_started":
                sid = event["session_id"]
            elif event["type"] == "benchmark_progress" and event.get("session_id") == sid:
                rate = event.get("goodput_mb_s") or event.get("rate_mb_s") or 0.0
                series.append((time.monotonic() - started, rate))
            elif event["type"] == "benchmark_result" and event.get("session_id") in (sid, None):
                return event, series
    raise SystemExit(f"no benchmark_result within {timeout} s")


def measure(trees: DemoTrees, name: str, command: dict[str, Any],
            timeout: float = 180) -> tuple[Measure, float]:
    """The run as a Measure, and CPU seconds per MB moved."""
    pids = trees.workers()
    before = cpu_seconds(pids)
    result, series = asyncio.run(one_run(trees.ui["alice"], command, timeout))
    cpu = cpu_seconds(pids) - before
    if not result.get("bytes"):
        return Measure(name, 0.0, None, result.get("error", "failed"), series), 0.0
    moved = result["bytes"] / MB
    detail = (f"{moved:.0f} MB, {result['status']}, SHA-256 match: {result['sha256_match']}, "
              f"{cpu:.1f} CPU s in the two worker trees")
    return Measure(name, result["goodput_mb_s"], result.get("loss"), detail, series), cpu / moved


def tree_runs(rate: float, udp_mb: float, quic_mb: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as workdir:
        trees = DemoTrees(workdir)
        try:
            up_ms = trees.tunnel_up_ms()
            udp, udp_cpu = measure(trees, f"worker UDP benchmark at {rate:g} MB/s", {
                "type": "start_benchmark_send", "mode": "udp", "size": int(udp_mb * MB),
                "rate_mb_s": rate})
            quic, quic_cpu = measure(trees, "worker QUIC tunnel, one stream", {
                "type": "start_benchmark_send", "mode": "quic", "size": int(quic_mb * MB)})
        finally:
            trees.stop()
    return {"tunnel_up_ms": up_ms, "udp": udp, "udp_cpu_per_mb": udp_cpu, "quic": quic,
            "quic_cpu_per_mb": quic_cpu}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--udp-mb", type=float, default=120.0)
    parser.add_argument("--quic-mb", type=float, default=20.0)
    args = parser.parse_args()
    out = tree_runs(args.rate, args.udp_mb, args.quic_mb)
    for key, value in out.items():
        print(key, value if not isinstance(value, Measure) else
              f"{value.mb_per_s:.1f} MB/s loss {value.loss} {value.detail}")
