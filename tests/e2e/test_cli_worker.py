"""`python supervisor.py rendezvous` and `python supervisor.py worker` as a user runs them: a
worker configured by the original's environment registers, reports its STUN endpoint, and
deregisters on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.processes import ROOT, alive, descendants, wait_until, within


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "supervisor.py"), *args], text=True,
                          capture_output=True, timeout=within(60), cwd=cwd,
                          env={k: v for k, v in {**os.environ, **(env or {})}.items() if v})


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "supervisor.py"), *args], text=True,
                            stdout=subprocess.PIPE, stderr=open(log, "w"),  # noqa: SIM115
                            env={**os.environ, **env})
    assert proc.stdout is not None
    line = proc.stdout.readline()  # bounded by the tree's own start timeouts
    assert "Ctrl-C stops everything" in line, log.read_text()[-2000:]
    return proc


def interrupt(proc: subprocess.Popen[str]) -> int:
    below = descendants(proc.pid)
    proc.send_signal(signal.SIGINT)
    code = proc.wait(within(30))
    wait_until(lambda: not any(alive(p) for p in below), 10, "every process to exit")
    return code


def test_the_worker_needs_its_rendezvous_url(tmp_path: Path) -> None:
    out = cli("worker", "--cert-dir", str(tmp_path), env={"RENDEZVOUS_SERVICE_URL": ""})
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "supervisor.py: RENDEZVOUS_SERVICE_URL is required (e.g. http://127.0.0.1:8080)"]


def test_a_malformed_worker_setting_names_itself(tmp_path: Path) -> None:
    out = cli("worker", "--cert-dir", str(tmp_path),
              env={"RENDEZVOUS_SERVICE_URL": "http://127.0.0.1:9", "STUN_PORT": "99999"})
    assert out.returncode == 2
    assert out.stderr.strip() == "supervisor.py: STUN_PORT='99999' must be between 0 and 65535"


def test_worker_registers_reports_its_endpoint_and_deregisters_on_ctrl_c(tmp_path: Path) -> None:
    http, stun = free_port(), free_port(socket.SOCK_DGRAM)
    rendezvous = start(["rendezvous", "--host", "127.0.0.1", "--port", str(http),
                        "--stun-port", str(stun), "--rundir", str(tmp_path / "rdv")],
                       {}, tmp_path / "rendezvous.log")
    ui = free_port()
    worker = start(["worker", "--cert-dir", str(tmp_path), "--rundir", str(tmp_path / "w")], {
        "RENDEZVOUS_SERVICE_URL": f"http://127.0.0.1:{http}", "STUN_PORT": str(stun),
        "INTERNAL_UDP_PORT": "0", "UDP_HOST": "127.0.0.1", "UI_HOST": "127.0.0.1",
        "PORT": str(ui), "WORKER_ID": "w1"}, tmp_path / "worker.log")
    try:
        assert (tmp_path / "cert.pem").exists() and (tmp_path / "key.pem").exists()
        assert httpx.get(f"http://127.0.0.1:{ui}/health", timeout=5).json()["worker_id"] == "w1"

        def listed() -> dict:
            return httpx.get(f"http://127.0.0.1:{http}/debug/list_workers",
                             timeout=5).json()["workers"]

        wait_until(lambda: listed().get("w1", {}).get("stun_reported_udp_port"), 20,
                   "w1's STUN endpoint at the rendezvous")
        assert listed()["w1"]["stun_reported_udp_ip"] == "127.0.0.1"
        assert interrupt(worker) == 0
        wait_until(lambda: "w1" not in listed(), 10, "w1 to leave the rendezvous")
        # it said explicit_deregister before closing, rather than just dropping the connection
        assert "worker w1: ready -> deregistered" in (tmp_path / "rendezvous.log").read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
        assert interrupt(rendezvous) == 0
