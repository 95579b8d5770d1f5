"""Worker benchmark: from the second worker's endpoint registration to the QUIC tunnel up and
authenticated on both sides, and the memory of one worker's tree.

    python bench/worker.py [--runs 10]

Each run starts `python supervisor.py demo` (a rendezvous service and two workers on loopback)
with JSON logs, and reads the times from the log lines every process writes with the same clock:
the registry's "connected -> ready" of the second worker, and each side's "tunnel ... up".
Memory is the PSS (proportional set size: shared pages split between the processes sharing them)
of one worker's supervisor, its fork server and its five actors, from /proc/PID/smaps_rollup.
The baseline is a bare `python -c "import aioquic, starlette, uvicorn, websockets"` process.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.client import Client  # noqa: E402


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0


def descendants(pid: int) -> set[int]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for kid in kids.get(todo.pop(), []):
            found.add(kid)
            todo.append(kid)
    return found


def one_run(workdir: str) -> tuple[float, int, int]:
    """(ms from the second registration to both tunnel ends up, worker tree PSS KiB, processes)."""
    log = Path(workdir) / "demo.jsonl"
    rundir = Path(workdir) / "run"
    proc = subprocess.Popen([sys.executable, str(ROOT / "supervisor.py"), "demo", "--rundir",
                             str(rundir)], stdout=subprocess.PIPE, stderr=open(log, "w"),  # noqa: SIM115
                            text=True, env={**os.environ, "P2P_LOG_FORMAT": "json"})
    try:
        assert proc.stdout is not None
        while "demo running" not in proc.stdout.readline():
            pass
        deadline = time.monotonic() + 30
        while (latency := tunnel_latency(log)) is None:
            if time.monotonic() > deadline:
                raise SystemExit(f"no tunnel within 30 s; see {log}")
            time.sleep(0.1)
        client = Client(str(rundir))
        alice = client.node("demo", "demo/alice")["pid"]
        client.close()
        pids = {alice} | descendants(alice)
        return latency, sum(pss_kib(p) for p in pids), len(pids)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def tunnel_latency(log: Path) -> float | None:
    ready: list[float] = []
    up: list[float] = []
    for line in log.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        msg = rec.get("msg", "")
        if rec.get("actor", "").endswith("/registry") and msg.endswith("connected -> ready"):
            ready.append(rec["ts"])
        elif rec.get("actor", "").endswith("/quic") and "authenticating -> up" in msg:
            up.append(rec["ts"])
    if len(ready) < 2 or len(up) < 2:
        return None
    return (max(up[:2]) - ready[1]) * 1000


def baseline_pss() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "import aioquic.quic.connection, starlette, "
                             "uvicorn, websockets, sys; print('imported', flush=True); "
                             "sys.stdin.read()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "imported"
    kib = pss_kib(proc.pid)
    proc.communicate("")
    return kib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    latencies, memory = [], []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-worker-") as workdir:
            ms, kib, count = one_run(workdir)
        latencies.append(ms)
        memory.append(kib)
        print(f"  run {i + 1:>2}: registration -> tunnel up {ms:7.1f} ms   worker tree PSS "
              f"{kib / 1024:6.1f} MiB in {count} processes", flush=True)
    base = baseline_pss()
    print(f"registration -> tunnel up: median {statistics.median(latencies):.1f} ms, "
          f"max {max(latencies):.1f} ms over {args.runs} runs (goal: median < 100 ms)")
    print(f"worker tree PSS: median {statistics.median(memory) / 1024:.1f} MiB "
          f"(goal: < 250 MiB); one bare python with the same imports: {base / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
