"""Soak test: the demo (a rendezvous service and two workers on loopback) under steady traffic for
N minutes, watched from the outside the way a user sees it.

    python bench/soak.py --minutes N [--chat-interval S] [--ping-interval S] [--grace S]
                         [--json FILE] [--workdir DIR]

It starts `python supervisor.py demo --rundir <workdir>/run` as a subprocess (its stdout and
stderr go to <workdir>/demo.stdout.log and <workdir>/demo.stderr.log; the workdir is kept and
printed), opens each worker's UI WebSocket `/ui_ws` as the page would, waits for the QUIC tunnel
to be up on both sides, subscribes to the demo's tree events (`actors.client.Client`), and then:

- every --chat-interval seconds sends one chat message on each of four streams: alice->bob and
  bob->alice, over UDP (`send_p2p_message`) and over QUIC (`send_quic_message`). Each text is
  `soak <transport> <src>-><dst> #<seq> <run id>`; the receiving side's `p2p_message_received` /
  `quic_message_received` events are matched by that text (the UI emits no QUIC delivery
  acknowledgement, so the receiver's event is the proof of delivery);
- every --ping-interval seconds each worker sends a UDP ping (`p2p_ping_command`, answered by a
  `p2p_ping_result` with `rtt_ms` or an `error`) and a QUIC echo (`quic_echo_command` with a unique
  payload, answered by `quic_echo_response`).

Every ~30 s it prints one progress line: elapsed time, chat sent/received per transport, pings
and echoes answered with their RTT p50/p99, and the number of tree events so far.

After N minutes (or Ctrl-C) it stops sending, waits up to --grace seconds for what is still in
flight, measures memory, stops the demo (SIGINT, then SIGKILL after 30 s, then any descendant
left) and prints the summary:

- unexpected tree events: any `exited`, `restarted`, `escalated`, `dead_letter` or
  `start_failed`. Nothing is killed on purpose, so every one of them is a fault; each is listed
  with its path, pid and reason. The per-node restart counters of the final tree snapshot are
  cross-checked too.
- chat per transport: sent, received, lost (sent and never received after the grace period, with
  the first lost sequence numbers), duplicates (a sequence number received twice), out of order
  (received after a higher one of the same stream), unknown (a soak text never sent), and the
  delivery latency (send on one UI socket to the event on the other).
- ping and echo: sent, answered, lost, errors by message, RTT p50/p99/max.
- tunnel state changes during the run, UI `error` events, UI WebSocket reconnects.
- memory: RSS and PSS (from /proc/PID/smaps_rollup) of the demo process and every descendant,
  after the tunnel came up and at the end. Bounded memory shows as a small end/start ratio that
  does not grow with --minutes; the per-process table names each process by its tree path.
- the demo's stderr: counts of WARNING/ERROR/Traceback lines and the last few of them.

When a progress tick finds a chat stream that delivered nothing since the previous tick, it writes
<workdir>/stall-N.json (at most 3): the tree with each actor's counters, each process's state and
kernel wait channel, and the Recv-Q/Send-Q of the demo's mailbox sockets (`ss -x`).

Exit code 0 only if there was no unexpected tree event, no QUIC chat loss and UDP chat loss of at
most 1 % (UDP chat is best effort); 1 if any of these failed, or if the demo failed to start or
bring the tunnel up, died during the run, or left a process behind; 130 for a run cut short by
Ctrl-C (or SIGTERM) that was clean so far. A first Ctrl-C stops the traffic and still waits out
the grace period; a second skips it. --json FILE writes the summary as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.client import Client  # noqa: E402

WORKERS = ("alice", "bob")
TRANSPORTS = ("udp", "quic")
SEND_COMMAND = {"udp": "send_p2p_message", "quic": "send_quic_message"}
RECEIVED = {"p2p_message_received": "udp", "quic_message_received": "quic"}
UNEXPECTED = ("exited", "restarted", "escalated", "dead_letter", "start_failed")
TEXT = re.compile(r"soak (udp|quic) (\w+)->(\w+) #(\d+) (\w+)")
START_TIMEOUT = 60.0
TUNNEL_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
UDP_LOSS_LIMIT = 0.01
PR_SET_PDEATHSIG = 1
MAX_DIAGNOSTICS = 3  # stall snapshots written to the workdir per run


def now() -> float:
    return time.monotonic()


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 3)

    return {"p50": rank(0.50), "p99": rank(0.99), "max": round(ordered[-1], 3),
            "n": len(ordered)}


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# -- traffic bookkeeping ---------------------------------------------------------------------

@dataclass
class Stream:
    """One direction of chat on one transport: what was sent and what the other side saw."""

    transport: str
    src: str
    dst: str
    next_seq: int = 1
    sent_at: dict[int, float] = field(default_factory=dict)
    arrived_at: dict[int, float] = field(default_factory=dict)
    duplicates: int = 0
    out_of_order: int = 0
    unknown: int = 0
    highest: int = 0

    def arrive(self, seq: int, at: float) -> None:
        if seq not in self.sent_at:
            self.unknown += 1
        elif seq in self.arrived_at:
            self.duplicates += 1
        else:
            if seq < self.highest:
                self.out_of_order += 1
            self.arrived_at[seq] = at
            self.highest = max(self.highest, seq)

    def lost(self) -> list[int]:
        return sorted(seq for seq in self.sent_at if seq not in self.arrived_at)

    def latencies_ms(self) -> list[float]:
        return [(at - self.sent_at[seq]) * 1000 for seq, at in self.arrived_at.items()]


@dataclass
class Probe:
    """Pings (UDP) or echoes (QUIC) of one worker: answered with an RTT, or with an error."""

    sent: int = 0
    rtts_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    pending: dict[str, float] = field(default_factory=dict)  # echo payload -> sent at

    @property
    def answered(self) -> int:
        return len(self.rtts_ms)

    def settled(self) -> bool:
        return self.answered + sum(self.errors.values()) >= self.sent


@dataclass
class TreeLog:
    """Tree events from the demo's root supervisor, as (seconds since the soak began, event)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.events.append(event)

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.events)


# -- processes and memory --------------------------------------------------------------------

def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    return kids


def descendants(pid: int) -> set[int]:
    kids, found, todo = children_map(), set(), [pid]
    while todo:
        for kid in kids.get(todo.pop(), []):
            if kid not in found:
                found.add(kid)
                todo.append(kid)
    return found


def start_time(pid: int) -> str | None:
    """The kernel's start time of a pid (field 22 of stat): tells a live process from a reuse."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def smaps(pid: int) -> tuple[int, int] | None:
    """(RSS KiB, PSS KiB) of a process, or None if it is gone."""
    values: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss"):
                    values[key] = int(rest.split()[0])
    except (OSError, ValueError):
        return None
    return values.get("Rss", 0), values.get("Pss", 0)


def parent_pid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def process_name(pid: int, paths: dict[int, str]) -> str:
    if pid in paths:
        return paths[pid]
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "?"
    if "forkserver" in cmdline:
        return f"(fork server of {paths.get(parent_pid(pid), '?')})"
    if "resource_tracker" in cmdline:
        return "(resource tracker)"
    return cmdline.strip()[:60] or "?"


def memory(root_pid: int, paths: dict[int, str]) -> dict[str, Any]:
    paths = {**paths, root_pid: "demo"}
    processes = []
    for pid in sorted({root_pid} | descendants(root_pid)):
        if (sizes := smaps(pid)) is not None:
            name = "demo (root)" if pid == root_pid else process_name(pid, paths)
            processes.append({"pid": pid, "name": name, "rss_kib": sizes[0], "pss_kib": sizes[1]})
    return {"processes": len(processes),
            "rss_kib": sum(p["rss_kib"] for p in processes),
            "pss_kib": sum(p["pss_kib"] for p in processes),
            "per_process": processes}


def die_with_parent() -> None:
    """In the demo's process, before exec: SIGINT it if this script dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGINT)


class DemoProcess:
    """`python supervisor.py demo` in its own session, so a Ctrl-C here reaches it only through
    `stop`; its output goes to files in the workdir."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.rundir = str(workdir / "run")
        self.stdout_log = workdir / "demo.stdout.log"
        self.stderr_log = workdir / "demo.stderr.log"
        self.ui: dict[str, str] = {}
        self.rendezvous = ""
        self.known: dict[int, str | None] = {}  # every pid seen below the demo -> start time
        with open(self.stdout_log, "w") as out, open(self.stderr_log, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "supervisor.py"), "demo", "--rundir", self.rundir],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=workdir,
                start_new_session=True, preexec_fn=die_with_parent)

    async def wait_running(self, timeout: float) -> None:
        deadline = now() + timeout
        while now() < deadline:
            text = self.stdout_log.read_text()
            if "demo running" in text:
                for line in text.splitlines():
                    if m := re.match(r"worker (\w+) UI:\s+(\S+)/\?token=(\S+)", line):
                        self.ui[m[1]], self.tokens[m[1]] = m[2], m[3]
                    elif m := re.match(r"rendezvous service: (\S+)/debug", line):
                        self.rendezvous = m[1]
                if set(WORKERS) <= self.ui.keys():
                    return
                raise RuntimeError(f"the demo printed no UI address for each worker:\n{text}")
            if self.proc.poll() is not None:
                raise RuntimeError(f"the demo exited with {self.proc.returncode} before running")
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the demo was not running within {timeout} s")

    def note_processes(self) -> None:
        for pid in descendants(self.proc.pid):
            self.known.setdefault(pid, start_time(pid))

    def ws_url(self, name: str) -> str:
        return self.ui[name].replace("http://", "ws://") + f"/ui_ws?token={self.tokens[name]}"

    def stop(self) -> list[dict[str, Any]]:
        """SIGINT, then SIGKILL after STOP_TIMEOUT; then any descendant still alive is killed.
        Returns the processes that had to be killed that way (left behind by the demo)."""
        self.note_processes()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        leftovers = []
        deadline = now() + 10
        while True:
            alive = {pid: st for pid, st in self.known.items()
                     if st is not None and start_time(pid) == st}
            if not alive or now() > deadline:
                break
            time.sleep(0.1)
        for pid in alive:
            leftovers.append({"pid": pid, "cmdline": process_name(pid, {})})
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        return leftovers


# -- the UI side -----------------------------------------------------------------------------

class Page:
    """One worker's UI WebSocket, reconnected if it drops; hands every event to the soak."""

    def __init__(self, soak: Soak, name: str, url: str) -> None:
        self.soak, self.name, self.url = soak, name, url
        self.ws: Any = None
        self.connected = asyncio.Event()
        self.connections = 0

    async def run(self) -> None:
        while not self.soak.closing:
            try:
                async with websockets.connect(self.url, max_size=2**20) as ws:
                    self.ws, self.connections = ws, self.connections + 1
                    if self.connections > 1:
                        self.soak.note(f"{self.name}: UI WebSocket reconnected")
                    self.connected.set()
                    await ws.send(json.dumps({"type": "ui_client_hello"}))
                    async for raw in ws:
                        self.soak.on_event(self.name, json.loads(raw))
                    if not self.soak.closing:
                            self.soak.note(f"{self.name}: UI WebSocket closed: "
                                       f"{ws.close_code} {ws.close_reason}")
            except (OSError, websockets.WebSocketException) as exc:
                if not self.soak.closing:
                    self.soak.note(f"{self.name}: UI WebSocket failed: {exc!r}")
            finally:
                self.ws = None
                self.connected.clear()
            if not self.soak.closing:
                await asyncio.sleep(1)

    async def send(self, **command: Any) -> bool:
        ws = self.ws
        if ws is None:
            return False
        try:
            await ws.send(json.dumps(command))
        except websockets.WebSocketException:
            return False
        return True


class Soak:
    def __init__(self, args: argparse.Namespace, demo: DemoProcess) -> None:
        self.args, self.demo = args, demo
        self.run_id = uuid.uuid4().hex[:8]
        self.t0 = now()
        self.closing = False
        self.stop_sending = asyncio.Event()
        self.hurry = asyncio.Event()
        self.interrupted = False
        self.traffic_started: float | None = None
        self.traffic_ended: float | None = None
        self.streams = {(t, s, d): Stream(t, s, d)
                        for t in TRANSPORTS for s in WORKERS for d in WORKERS if s != d}
        self.pings = {name: Probe() for name in WORKERS}
        self.echoes = {name: Probe() for name in WORKERS}
        self.tunnel: dict[str, str] = {}
        self.tunnel_changes: list[dict[str, Any]] = []
        self.ui_errors: Counter[str] = Counter()
        self.notes: list[dict[str, Any]] = []
        self.not_sent: Counter[str] = Counter()
        self.tree = TreeLog()
        self.pages = {name: Page(self, name, demo.ws_url(name)) for name in WORKERS}
        self.tunnel_up = {name: asyncio.Event() for name in WORKERS}
        self.echo_seq = 0
        self.diagnostics = 0

    def elapsed(self) -> float:
        return round(now() - self.t0, 3)

    def note(self, text: str) -> None:
        self.notes.append({"t": self.elapsed(), "note": text})
        print(f"[{self.elapsed():7.1f}s] {text}", flush=True)

    # -- events from the UI sockets ------------------------------------------------------------
    def on_event(self, worker: str, event: dict[str, Any]) -> None:
        kind, at = event.get("type"), now()
        if kind in RECEIVED:
            self.on_chat(worker, RECEIVED[kind], str(event.get("content", "")), at)
        elif kind == "p2p_ping_result":
            probe = self.pings[worker]
            if isinstance(event.get("rtt_ms"), int | float):
                probe.rtts_ms.append(float(event["rtt_ms"]))
            else:
                probe.errors[str(event.get("error"))] += 1
        elif kind == "quic_echo_response":
            self.on_echo(worker, event)
        elif kind == "quic_status_update":
            state = str(event.get("state"))
            if self.tunnel.get(worker) != state:
                if worker in self.tunnel and self.traffic_started is not None:
                    self.tunnel_changes.append({"t": self.elapsed(), "worker": worker,
                                                "from": self.tunnel[worker], "to": state,
                                                "message": event.get("message")})
                self.tunnel[worker] = state
            if state == "up":
                self.tunnel_up[worker].set()
            else:
                self.tunnel_up[worker].clear()
        elif kind == "error":
            self.ui_errors[f"{worker}: {event.get('message')}"] += 1

    def on_chat(self, worker: str, transport: str, content: str, at: float) -> None:
        m = TEXT.fullmatch(content)
        if m is None or m[5] != self.run_id:
            return  # not ours (another page, an earlier run)
        stream = self.streams.get((m[1], m[2], m[3]))
        if stream is None or m[1] != transport or m[3] != worker:
            self.ui_errors[f"{worker}: misrouted chat {content!r}"] += 1
            return
        stream.arrive(int(m[4]), at)

    def on_echo(self, worker: str, event: dict[str, Any]) -> None:
        probe = self.echoes[worker]
        payload = str(event.get("payload"))
        if probe.pending.pop(payload, None) is None:
            return  # not one of ours, or answered twice
        if isinstance(event.get("rtt_ms"), int | float):
            probe.rtts_ms.append(float(event["rtt_ms"]))
        else:
            probe.errors[str(event.get("error"))] += 1

    # -- traffic -------------------------------------------------------------------------------
    async def send_chat(self) -> None:
        while not self.stop_sending.is_set():
            for stream in self.streams.values():
                seq = stream.next_seq
                text = f"soak {stream.transport} {stream.src}->{stream.dst} #{seq} {self.run_id}"
                sent_at = now()
                if await self.pages[stream.src].send(type=SEND_COMMAND[stream.transport],
                                                     content=text):
                    stream.sent_at[seq] = sent_at
                    stream.next_seq += 1
                else:
                    self.not_sent[f"{stream.src} chat {stream.transport}"] += 1
            await self.pause(self.args.chat_interval)

    async def send_probes(self) -> None:
        while not self.stop_sending.is_set():
            for name, page in self.pages.items():
                if await page.send(type="p2p_ping_command"):
                    self.pings[name].sent += 1
                else:
                    self.not_sent[f"{name} ping"] += 1
                self.echo_seq += 1
                payload = f"soak echo {name} #{self.echo_seq} {self.run_id}"
                if await page.send(type="quic_echo_command", payload=payload):
                    self.echoes[name].sent += 1
                    self.echoes[name].pending[payload] = now()
                else:
                    self.not_sent[f"{name} echo"] += 1
            await self.pause(self.args.ping_interval)

    async def pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_sending.wait(), seconds)

    async def watch_tree(self, client: Client) -> None:
        """Tree events, read by a thread (the client's API blocks) until the soak closes."""
        def read() -> None:
            while not self.closing:
                for event in client.events(0.5):
                    self.tree.add({"t": self.elapsed(), "kind": event.kind, "path": event.path,
                                   "pid": event.pid, "reason": event.reason,
                                   "during_run": not self.closing})
                    if event.kind in UNEXPECTED:
                        print(f"[{self.elapsed():7.1f}s] tree event: {event.kind} {event.path} "
                              f"pid {event.pid}: {event.reason}", flush=True)
                    if self.closing:
                        return
        await asyncio.to_thread(read)

    async def watch_demo(self) -> None:
        while not self.stop_sending.is_set():
            if self.demo.proc.poll() is not None:
                self.note(f"the demo exited with {self.demo.proc.returncode} during the run")
                self.stop_sending.set()
                return
            self.demo.note_processes()  # so a restarted actor's pid is known at stop time
            await self.pause(1.0)

    async def progress(self, client: Client) -> None:
        last = self.received_counts()
        while not self.stop_sending.is_set():
            await self.pause(self.args.progress_interval)
            print(self.progress_line(), flush=True)
            counts = self.received_counts()
            stalled = [key for key, n in counts.items() if n == last.get(key)]
            last = counts
            if stalled and self.diagnostics < MAX_DIAGNOSTICS:
                self.diagnostics += 1
                path = self.demo.workdir / f"stall-{self.diagnostics}.json"
                await asyncio.to_thread(self.dump_diagnostics, client, path, stalled)
                self.note(f"no delivery on {', '.join(stalled)} for "
                          f"{self.args.progress_interval:.0f} s; diagnostics in {path}")

    def received_counts(self) -> dict[str, int]:
        return {f"{s.transport} {s.src}->{s.dst}": len(s.arrived_at)
                for s in self.streams.values()}

    def dump_diagnostics(self, client: Client, path: Path, stalled: list[str]) -> None:
        """What it takes to diagnose a stall: the tree with each actor's counters, each
        process's state and kernel wait channel, and the queues of the mailbox sockets."""
        info: dict[str, Any] = {"t": self.elapsed(), "stalled": stalled}
        try:
            nodes = client.tree("demo", timeout=5)
            info["tree"] = nodes
        except Exception as exc:  # a stalled tree may not answer; that is worth knowing too
            nodes, info["tree"] = [], f"no answer: {exc!r}"
        paths = {n["pid"]: n["path"] for n in nodes if n.get("pid")}
        procs = []
        for pid in sorted({self.demo.proc.pid} | descendants(self.demo.proc.pid)):
            entry: dict[str, Any] = {"pid": pid, "name": process_name(pid, paths)}
            for key in ("wchan", "status"):
                with contextlib.suppress(OSError):
                    text = Path(f"/proc/{pid}/{key}").read_text()
                    entry[key] = text if key == "wchan" else next(
                        (line.split(":", 1)[1].strip() for line in text.splitlines()
                         if line.startswith("State:")), "?")
            procs.append(entry)
        info["processes"] = procs
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            ss = subprocess.run(["ss", "-x", "-a", "-p"], capture_output=True, text=True,
                                timeout=10).stdout
            info["mailbox_sockets"] = [line for line in ss.splitlines()
                                       if self.demo.rundir in line or "p2p-" in line]
        path.write_text(json.dumps(info, indent=2, default=str) + "\n")

    def progress_line(self) -> str:
        parts = [f"[{self.elapsed():7.1f}s]"]
        for transport in TRANSPORTS:
            streams = [s for s in self.streams.values() if s.transport == transport]
            sent = sum(len(s.sent_at) for s in streams)
            got = sum(len(s.arrived_at) for s in streams)
            parts.append(f"{transport} chat {got}/{sent}")
        for label, probes in (("ping", self.pings), ("echo", self.echoes)):
            rtts = [r for p in probes.values() for r in p.rtts_ms]
            sent = sum(p.sent for p in probes.values())
            stats = percentiles(rtts)
            parts.append(f"{label} {len(rtts)}/{sent} rtt p50 {ms(stats['p50'])} "
                         f"p99 {ms(stats['p99'])} ms")
        events = self.tree.snapshot()
        bad = sum(1 for e in events if e["kind"] in UNEXPECTED)
        parts.append(f"tree events {len(events)} ({bad} unexpected)")
        return " | ".join(parts)

    def settled(self) -> bool:
        return (all(not s.lost() for s in self.streams.values())
                and all(p.settled() for p in (*self.pings.values(), *self.echoes.values())))

    async def grace(self) -> None:
        deadline = now() + self.args.grace
        while not self.settled() and now() < deadline and not self.hurry.is_set():
            await asyncio.sleep(0.2)


# -- the run ---------------------------------------------------------------------------------

async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    demo = DemoProcess(workdir)
    print(f"soak: workdir {workdir}; demo pid {demo.proc.pid}; demo stderr {demo.stderr_log}",
          flush=True)
    summary: dict[str, Any] = {"minutes": args.minutes, "workdir": str(workdir),
                               "demo_stderr": str(demo.stderr_log), "failures": []}
    soak: Soak | None = None
    client: Client | None = None
    tasks: list[asyncio.Task[Any]] = []
    tree_task: asyncio.Task[Any] | None = None
    interrupts = 0

    def interrupt() -> None:
        nonlocal interrupts
        interrupts += 1
        if soak is None:
            raise_in_main.set()
            return
        soak.interrupted = True
        if interrupts == 1:
            soak.note("interrupted: stopping traffic (Ctrl-C again to skip the grace period)")
            soak.stop_sending.set()
        else:
            soak.hurry.set()

    raise_in_main = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt)
    memory_start: dict[str, Any] | None = None
    try:
        starting = asyncio.ensure_future(demo.wait_running(START_TIMEOUT))
        stopper = asyncio.ensure_future(raise_in_main.wait())
        await asyncio.wait({starting, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not starting.done():
            starting.cancel()
            summary["failures"].append("interrupted before the demo was running")
            summary["interrupted"] = True
            return summary
        try:
            starting.result()
        except RuntimeError as exc:
            summary["failures"].append(str(exc))
            return summary
        print(f"soak: demo running; UIs {demo.ui}", flush=True)
        soak = Soak(args, demo)
        summary["run_id"] = soak.run_id
        client = Client(demo.rundir)
        await asyncio.to_thread(client.subscribe, "demo")
        tree_task = asyncio.ensure_future(soak.watch_tree(client))
        tasks += [asyncio.ensure_future(page.run()) for page in soak.pages.values()]
        tasks.append(asyncio.ensure_future(soak.watch_demo()))
        up = asyncio.ensure_future(asyncio.wait_for(
            asyncio.gather(*(e.wait() for e in soak.tunnel_up.values())), TUNNEL_TIMEOUT))
        stopper = asyncio.ensure_future(soak.stop_sending.wait())
        await asyncio.wait({up, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not up.done() or up.exception() is not None:
            up.cancel()
            summary["failures"].append(
                f"the QUIC tunnel was not up on both sides within {TUNNEL_TIMEOUT} s "
                f"(last states {soak.tunnel})")
        else:
            soak.note(f"tunnel up on both sides; traffic for {args.minutes} min")
            nodes = await asyncio.to_thread(client.tree, "demo")
            paths = {n["pid"]: n["path"] for n in nodes if n.get("pid")}
            memory_start = memory(demo.proc.pid, paths)
            demo.note_processes()
            soak.traffic_started = now()
            traffic = [asyncio.ensure_future(soak.send_chat()),
                       asyncio.ensure_future(soak.send_probes()),
                       asyncio.ensure_future(soak.progress(client))]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(soak.stop_sending.wait(), args.minutes * 60)
            soak.stop_sending.set()
            await asyncio.gather(*traffic)
            soak.traffic_ended = now()
            soak.note(f"traffic stopped; grace period up to {args.grace} s for what is in flight")
            await soak.grace()
            print(soak.progress_line(), flush=True)
        try:
            nodes = await asyncio.to_thread(client.tree, "demo")
        except Exception as exc:  # the demo may be gone; the summary says so
            nodes = []
            summary["failures"].append(f"no tree snapshot at the end: {exc!r}")
        paths = {n["pid"]: n["path"] for n in nodes if n.get("pid")}
        summary["tree_at_end"] = [{k: n.get(k) for k in ("path", "pid", "state", "restarts",
                                                         "last_exit")} for n in nodes]
        if memory_start is not None:
            summary["memory"] = {"start": memory_start, "end": memory(demo.proc.pid, paths)}
        return summary
    finally:
        if soak is not None:
            soak.closing = True
            soak.stop_sending.set()
            for page in soak.pages.values():
                if page.ws is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(page.ws.close(), 2)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if tree_task is not None:  # its thread sees `closing` within half a second
            await asyncio.gather(tree_task, return_exceptions=True)
        if client is not None:
            client.close()
        print("soak: stopping the demo", flush=True)
        summary["leftover_processes"] = await asyncio.to_thread(demo.stop)
        summary["demo_returncode"] = demo.proc.returncode
        if soak is not None:
            summary.update(results(soak))
        summary["demo_log"] = log_excerpt(demo.stderr_log)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def results(soak: Soak) -> dict[str, Any]:
    start, end = soak.traffic_started, soak.traffic_ended or now()
    events = soak.tree.snapshot()
    chat: dict[str, Any] = {}
    for transport in TRANSPORTS:
        streams = [s for s in soak.streams.values() if s.transport == transport]
        sent = sum(len(s.sent_at) for s in streams)
        lost = {f"{s.src}->{s.dst}": s.lost() for s in streams}
        n_lost = sum(len(v) for v in lost.values())
        chat[transport] = {
            "sent": sent, "received": sum(len(s.arrived_at) for s in streams),
            "lost": n_lost, "loss_pct": round(100 * n_lost / sent, 3) if sent else 0.0,
            "duplicates": sum(s.duplicates for s in streams),
            "out_of_order": sum(s.out_of_order for s in streams),
            "unknown": sum(s.unknown for s in streams),
            "lost_first": {k: v[:20] for k, v in lost.items() if v},
            "latency_ms": percentiles([x for s in streams for x in s.latencies_ms()]),
        }
        worst = max(((at - s.sent_at[seq], s, seq) for s in streams
                     for seq, at in s.arrived_at.items()), default=None, key=lambda w: w[0])
        if worst is not None:
            chat[transport]["slowest"] = {
                "stream": f"{worst[1].src}->{worst[1].dst}", "seq": worst[2],
                "sent_at_s": round(worst[1].sent_at[worst[2]] - soak.t0, 1),
                "ms": round(worst[0] * 1000, 1)}

    def probes(table: dict[str, Probe]) -> dict[str, Any]:
        sent = sum(p.sent for p in table.values())
        answered = sum(p.answered for p in table.values())
        errors: Counter[str] = Counter()
        for p in table.values():
            errors.update(p.errors)
        return {"sent": sent, "answered": answered, "lost": sent - answered,
                "errors": dict(errors),
                "rtt_ms": percentiles([r for p in table.values() for r in p.rtts_ms])}

    return {
        "run_id": soak.run_id, "interrupted": soak.interrupted,
        "traffic_seconds": round(end - start, 1) if start is not None else 0.0,
        "unexpected_events": [e for e in events if e["kind"] in UNEXPECTED],
        "tree_events": dict(Counter(e["kind"] for e in events)),
        "chat": chat, "ping": probes(soak.pings), "echo": probes(soak.echoes),
        "tunnel_changes": soak.tunnel_changes, "ui_errors": dict(soak.ui_errors),
        "commands_not_sent": dict(soak.not_sent), "notes": soak.notes,
    }


def log_excerpt(path: Path, keep: int = 15) -> dict[str, Any]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    marks = ("WARNING", "ERROR", "CRITICAL", "Traceback")
    flagged = [line for line in lines if any(m in line for m in marks)]
    return {"lines": len(lines),
            "counts": {m: sum(1 for line in lines if m in line) for m in marks},
            "last_flagged": [line[:400] for line in flagged[-keep:]]}


def verdict(summary: dict[str, Any]) -> list[str]:
    failures = list(summary.get("failures", []))
    for event in summary.get("unexpected_events", []):
        failures.append(f"unexpected tree event: {event['kind']} {event['path']}")
    for node in summary.get("tree_at_end", []):
        if node.get("restarts"):
            failures.append(f"{node['path']} restarted {node['restarts']} time(s)")
    chat = summary.get("chat")
    if chat is not None:
        if chat["quic"]["lost"]:
            failures.append(f"QUIC chat lost {chat['quic']['lost']} message(s)")
        if chat["udp"]["loss_pct"] > 100 * UDP_LOSS_LIMIT:
            failures.append(f"UDP chat loss {chat['udp']['loss_pct']} % > "
                            f"{100 * UDP_LOSS_LIMIT:.0f} %")
    elif not failures:
        failures.append("no traffic was run")
    if summary.get("leftover_processes"):
        failures.append(f"{len(summary['leftover_processes'])} process(es) left behind")
    if any("exited with" in n["note"] for n in summary.get("notes", [])):
        failures.append("the demo exited during the run")
    return failures


def kib(value: int) -> str:
    return f"{value / 1024:.1f} MiB"


def print_summary(summary: dict[str, Any]) -> None:
    out = ["", "=" * 78, f"soak summary (run {summary.get('run_id', '-')}, "
           f"{summary.get('traffic_seconds', 0)} s of traffic"
           f"{', interrupted' if summary.get('interrupted') else ''})"]
    unexpected = summary.get("unexpected_events", [])
    out.append(f"tree events: {summary.get('tree_events', {})}; unexpected: {len(unexpected)}")
    for e in unexpected:
        out.append(f"  {e['t']:8.1f}s {e['kind']:<12} {e['path']:<26} pid {e['pid']:<7} "
                   f"{e['reason']}")
    for name, c in summary.get("chat", {}).items():
        lat = c["latency_ms"]
        out.append(f"{name} chat: sent {c['sent']} received {c['received']} lost {c['lost']} "
                   f"({c['loss_pct']} %) duplicates {c['duplicates']} out-of-order "
                   f"{c['out_of_order']} unknown {c['unknown']}; delivery ms p50 "
                   f"{ms(lat['p50'])} p99 {ms(lat['p99'])} max {ms(lat['max'])}")
        if slow := c.get("slowest"):
            out.append(f"  slowest: {slow['stream']} #{slow['seq']} sent at "
                       f"{slow['sent_at_s']} s took {slow['ms']} ms")
        for direction, seqs in c["lost_first"].items():
            out.append(f"  lost {direction}: #{', #'.join(map(str, seqs))}")
    for name in ("ping", "echo"):
        if (p := summary.get(name)) is not None:
            rtt = p["rtt_ms"]
            out.append(f"{name}: sent {p['sent']} answered {p['answered']} lost {p['lost']} "
                       f"errors {p['errors'] or 0}; rtt ms p50 {ms(rtt['p50'])} "
                       f"p99 {ms(rtt['p99'])} max {ms(rtt['max'])}")
    if summary.get("tunnel_changes"):
        out.append(f"tunnel state changes: {summary['tunnel_changes']}")
    if summary.get("ui_errors"):
        out.append(f"UI error events: {summary['ui_errors']}")
    if summary.get("commands_not_sent"):
        out.append(f"commands not sent (UI socket down): {summary['commands_not_sent']}")
    if mem := summary.get("memory"):
        start, end = mem["start"], mem["end"]
        out.append(f"memory (demo root + descendants): start {start['processes']} processes "
                   f"RSS {kib(start['rss_kib'])} PSS {kib(start['pss_kib'])}; end "
                   f"{end['processes']} processes RSS {kib(end['rss_kib'])} "
                   f"PSS {kib(end['pss_kib'])} (PSS {end['pss_kib'] - start['pss_kib']:+d} KiB)")
        before = {(p["pid"], p["name"]): p for p in start["per_process"]}

        def growth(p: dict[str, Any]) -> int:
            return int(p["pss_kib"] - before.get((p["pid"], p["name"]), p)["pss_kib"])

        out.append(f"  {'process (by PSS growth)':<34} {'pid':>7} {'PSS start':>10} "
                   f"{'PSS end':>10} {'RSS end':>10}")
        for p in sorted(end["per_process"], key=growth, reverse=True):
            first = before.get((p["pid"], p["name"]))
            pss_start = "new" if first is None else kib(first["pss_kib"])
            out.append(f"  {p['name'][:34]:<34} {p['pid']:>7} {pss_start:>10} "
                       f"{kib(p['pss_kib']):>10} {kib(p['rss_kib']):>10}")
    log = summary.get("demo_log", {})
    out.append(f"demo stderr: {summary.get('demo_stderr')} ({log.get('lines', 0)} lines; "
               f"{log.get('counts', {})})")
    for line in log.get("last_flagged", []):
        out.append(f"  | {line}")
    if summary.get("leftover_processes"):
        out.append(f"left behind (killed): {summary['leftover_processes']}")
    failures = summary["verdict"]
    cut = " (interrupted: a partial run)" if summary.get("interrupted") else ""
    out.append("RESULT: " + ("PASS" if not failures else "FAIL: " + "; ".join(failures)) + cut)
    print("\n".join(out), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--minutes", type=float, required=True, help="how long traffic runs")
    parser.add_argument("--chat-interval", type=float, default=0.1,
                        help="seconds between chat rounds (one message per stream; default 0.1)")
    parser.add_argument("--ping-interval", type=float, default=1.0,
                        help="seconds between pings and echoes of each worker (default 1)")
    parser.add_argument("--grace", type=float, default=15.0,
                        help="seconds to wait for messages in flight at the end (default 15)")
    parser.add_argument("--progress-interval", type=float, default=30.0)
    parser.add_argument("--json", type=Path, help="write the summary to this file as JSON")
    parser.add_argument("--workdir", type=Path,
                        help="where the demo's run directory and logs go (default: a new temp dir)")
    args = parser.parse_args()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        workdir = args.workdir.resolve()
    else:
        workdir = Path(tempfile.mkdtemp(prefix="holepunch-soak-"))
    summary = asyncio.run(run(args, workdir))
    summary["verdict"] = verdict(summary)
    print_summary(summary)
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        print(f"summary written to {args.json}")
    if summary["verdict"]:
        return 1
    return 130 if summary.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
