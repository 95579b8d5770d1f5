"""The processes of a lab: the rendezvous service (and optionally stund) in the internet
namespace, one ``supervisor.py worker`` in each site's host namespace. Each runs in a session of
its own with JSON logs in the lab's work directory; ``stop`` ends it by its own process group.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.netns import LabError, connect_in
from lab.topology import OTHER_IP, RENDEZVOUS_IP

ROOT = Path(__file__).resolve().parent.parent
HTTP_PORT, STUN_PORT, UDP_PORT, UI_PORT = 8080, 3478, 8081, 8080
UI_TOKEN = "lab-ui-token-not-secret"  # each worker's UI is reachable only inside its namespace
STUND_PORT, STUND_OTHER_PORT = 3479, 3480  # beside the embedded responder's 3478
STUND = "/usr/sbin/stund"


@dataclass
class Service:
    name: str
    ns: str
    proc: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 10) -> None:
        """SIGINT to its process group (a supervisor stops its tree), then SIGKILL."""
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 5)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        try:  # whatever the supervisor left in its group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def records(self) -> list[dict[str, Any]]:
        """Its JSON log lines."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found


def start(name: str, ns: str, command: list[str], workdir: Path) -> Service:
    log = workdir / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *command], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "P2P_LOG_FORMAT": "json"})
    return Service(name, ns, proc, log)


def rendezvous(ns: str, workdir: Path, host: str = RENDEZVOUS_IP) -> Service:
    """Bound to its one address by default: on the wildcard the embedded STUN responder
    answers from the address of the link a reply leaves by, which a NAT drops (see README)."""
    return start("rendezvous", ns, [
        sys.executable, "supervisor.py", "rendezvous", "--host", host,
        "--port", str(HTTP_PORT), "--stun-port", str(STUN_PORT),
        "--rundir", str(workdir / "rendezvous-run")], workdir)


def stund(ns: str, workdir: Path) -> Service:
    """RFC 3489 stund on two addresses, for the NAT-type tests the embedded responder (one
    address) cannot answer."""
    return start("stund", ns, [STUND, "-h", RENDEZVOUS_IP, "-a", OTHER_IP, "-p", str(STUND_PORT),
                               "-o", str(STUND_OTHER_PORT)], workdir)


def worker(name: str, ns: str, workdir: Path, use_stund: bool = False) -> Service:
    home = workdir / name
    home.mkdir(parents=True, exist_ok=True)
    stun = ["--stun-host", RENDEZVOUS_IP, "--stun-port", str(STUND_PORT)] if use_stund else []
    return start(name, ns, [
        sys.executable, "supervisor.py", "worker",
        "--rendezvous-url", f"http://{RENDEZVOUS_IP}:{HTTP_PORT}", "--worker-id", name,
        "--udp-port", str(UDP_PORT), "--port", str(UI_PORT), "--ui-host", "127.0.0.1",
        "--ui-token", UI_TOKEN,
        "--cert-dir", str(home), "--rundir", str(home / "run"), *stun], workdir)


def http_get(ns: str, host: str, port: int, path: str, timeout: float = 5) -> Any:
    """GET a JSON document from inside ``ns``."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    conn.sock = connect_in(ns, host, port, timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return json.loads(response.read())
    finally:
        conn.close()


def wait_http(service: Service, host: str, port: int, path: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if not service.alive():
            raise LabError(f"{service.name} exited: {service.log.read_text()[-2000:]}")
        try:
            return http_get(service.ns, host, port, path)
        except (OSError, ValueError, http.client.HTTPException):
            if time.monotonic() > deadline:
                raise LabError(f"{service.name} did not answer {path} within {timeout} s; "
                               f"log {service.log}") from None
            time.sleep(0.1)
