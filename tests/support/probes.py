"""Probe actors for the fault-injection tests and the benchmarks.

``Probe`` records every message it handles by appending ``sender seq`` to a file, so what it
received survives its own crashes and a test can check that nothing was lost or reordered.
A probe whose payload is ``b"poison"`` crashes its receiver, every time; ``b"sleep:S"`` blocks
the handler for S seconds. ``config["work_us"]`` makes every probe cost that much CPU.
"""

from __future__ import annotations

import os
import time
from typing import Any

from actors.actor import Actor
from messages.runtime import Probe, ProbeBurst, Record, RecordRequest


class ProbeActor(Actor):
    def on_start(self) -> None:
        self.seen: dict[str, list[int]] = {}
        record = self.ctx.config.get("record_to")
        self.record = open(record, "a", buffering=1) if record else None  # noqa: SIM115
        self.work = self.ctx.config.get("work_us", 0) / 1e6

    def on_receive(self, msg: Any) -> Any:
        if isinstance(msg, Probe):
            return self.probe(msg)
        if isinstance(msg, ProbeBurst):
            return self.burst(msg)
        if isinstance(msg, RecordRequest):
            return Record(self.seen)
        return super().on_receive(msg)

    def burst(self, msg: ProbeBurst) -> Any:
        """Tell ``count`` probes, then ask one more: its answer means all were handled (one
        sender's messages arrive in order). In an asyncio actor the runtime awaits it."""
        target = self.ctx.ref(msg.target)
        for seq in range(msg.count):
            target.tell(Probe(self.ctx.path, seq))
        return target.ask(Probe(self.ctx.path, msg.count), timeout=600.0)

    def probe(self, msg: Probe) -> int:
        if msg.payload == b"poison":
            raise RuntimeError("poison probe")
        if msg.payload.startswith(b"sleep:"):
            time.sleep(float(msg.payload[6:]))
        if self.work:
            until = time.perf_counter() + self.work
            while time.perf_counter() < until:
                pass
        self.seen.setdefault(msg.sender, []).append(msg.seq)
        if self.record is not None:
            self.record.write(f"{msg.sender} {msg.seq}\n")
        return msg.seq

    def on_stop(self) -> None:
        if self.record is not None:
            self.record.close()


class BlockingProbe(ProbeActor):
    blocking = True


def read_record(file: str) -> list[tuple[str, int]]:
    if not os.path.exists(file):
        return []
    with open(file) as f:
        return [(s, int(n)) for s, n in (line.split() for line in f if line.strip())]


# -- the benchmark's baselines: bare processes of the same forkserver context as the actors -------
def baseline_ready(conn: Any) -> None:
    conn.send_bytes(b"up")


def baseline_sink(conn: Any, n: int) -> None:
    import msgpack

    for _ in range(n):
        msgpack.unpackb(conn.recv_bytes())
    conn.send_bytes(b"done")


def baseline_echo(conn: Any) -> None:
    import msgpack

    while (data := conn.recv_bytes()) != b"stop":
        conn.send_bytes(msgpack.packb(msgpack.unpackb(data)))


def baseline_dgram_echo(sock: Any) -> None:
    """The same echo over a Unix datagram socket: the transport the mailboxes use."""
    import msgpack

    while (data := sock.recv(65536)) != b"stop":
        sock.send(msgpack.packb(msgpack.unpackb(data)))
