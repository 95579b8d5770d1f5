"""The demo left alone: a minute and a half of an idle tree must pass with no exit at all.

Healthy actors and nested supervisors were once killed as "hung" every minute or two on an idle
machine (a heartbeat read as zero while it was being written); only a run this long shows it.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actors.client import Client
from tests.support.processes import ROOT, alive, descendants, wait_until, within

IDLE = 90.0  # seconds

pytestmark = [pytest.mark.slow, pytest.mark.timeout(IDLE + 120)]


def test_an_idle_demo_has_no_exit_for_ninety_seconds(tmp_path: Path) -> None:
    rundir = str(tmp_path / "run")
    log = tmp_path / "demo.log"
    proc = subprocess.Popen([sys.executable, str(ROOT / "supervisor.py"), "demo", "--rundir",
                             rundir], stdout=subprocess.PIPE, stderr=open(log, "w"),  # noqa: SIM115
                            text=True, cwd=tmp_path)
    client = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "demo running" in line:
                break
        else:
            raise AssertionError(f"the demo did not start:\n{log.read_text()[-3000:]}")
        client = Client(rundir)
        client.subscribe("demo")
        pids = {n["path"]: n["pid"] for n in client.tree("demo")}
        end = time.monotonic() + IDLE
        events = []
        while (left := end - time.monotonic()) > 0:
            events += [e for e in client.events(min(left, 5.0))]
        unexpected = [(e.kind, e.path, e.reason) for e in events
                      if e.kind in ("exited", "restarted", "escalated", "dead_letter")]
        assert unexpected == [], unexpected
        assert not re.search(r"hung|escalat", log.read_text())
        assert {n["path"]: n["pid"] for n in client.tree("demo")} == pids
    finally:
        if client is not None:
            client.close()
        below = descendants(proc.pid)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(within(30))
        except subprocess.TimeoutExpired:
            proc.kill()
        wait_until(lambda: not any(alive(p) for p in below), 10, "the demo's processes to exit")
