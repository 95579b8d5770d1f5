"""One lab: the network (``topology``) and its processes (``services``), up together and torn
down together, whatever ends it (an error, Ctrl-C, SIGTERM, the end of a ``with`` block).
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType, TracebackType

from lab import services
from lab.netns import LabError
from lab.services import Service
from lab.topology import RENDEZVOUS_IP, Network

WORKERS = {"a": "alice", "b": "bob"}
START_TIMEOUT = 60.0  # a worker tree starts some ten processes; on 2 busy cores that takes a while


class Lab:
    def __init__(self, nat_a: str = "port-restricted", nat_b: str = "port-restricted",
                 delay_ms: float = 0.0, loss: float = 0.0, stund: bool = False,
                 workdir: Path | None = None, rendezvous_host: str = RENDEZVOUS_IP) -> None:
        self.net = Network(nat_a, nat_b, delay_ms, loss)
        self.use_stund = stund
        self.rendezvous_host = rendezvous_host
        self.own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"{self.net.run}-"))
        self.rendezvous: Service | None = None
        self.stund: Service | None = None
        self.workers: dict[str, Service] = {}

    def ns(self, role: str) -> str:
        return self.net.ns(role)

    def host_ns(self, worker: str) -> str:
        site = next(s for s, name in WORKERS.items() if name == worker)
        return self.ns(f"h{site}")

    def up(self, start_workers: bool = True) -> Lab:
        try:
            self.net.build()
            inet = self.ns("inet")
            self.rendezvous = services.rendezvous(inet, self.workdir, self.rendezvous_host)
            if self.use_stund:
                self.stund = services.stund(inet, self.workdir)
            services.wait_http(self.rendezvous, RENDEZVOUS_IP, services.HTTP_PORT, "/health",
                               START_TIMEOUT)
            if start_workers:
                self.start_workers(*WORKERS.values())
        except BaseException:
            self.close()
            raise
        return self

    def start_workers(self, *names: str) -> None:
        """Start them at once (the sites come up in parallel), then wait for each UI."""
        for name in names:
            self.workers[name] = services.worker(name, self.host_ns(name), self.workdir,
                                                 self.use_stund)
        for name in names:
            services.wait_http(self.workers[name], "127.0.0.1", services.UI_PORT, "/health",
                               START_TIMEOUT)

    def stop_worker(self, name: str) -> None:
        if (worker := self.workers.pop(name, None)) is not None:
            worker.stop()

    def close(self) -> None:
        """Processes first (in parallel: each may take its grace period), then the network."""
        stoppers = [threading.Thread(target=s.stop) for s in self.services()]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()
        self.workers.clear()
        self.rendezvous = self.stund = None
        self.net.destroy()

    def remove_workdir(self) -> None:
        if self.own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def services(self) -> list[Service]:
        return [s for s in (self.rendezvous, self.stund, *self.workers.values()) if s is not None]

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def raise_on_sigterm() -> None:
    """SIGTERM (and SIGHUP) end the lab as Ctrl-C does: through ``close``."""
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


__all__ = ["Lab", "LabError", "WORKERS", "raise_on_sigterm"]
