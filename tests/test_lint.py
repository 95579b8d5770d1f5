"""The code stays ruff- and mypy-clean: the project's own rules, checked with every test run."""

from __future__ import annotations

import subprocess
import sys

from tests.support.processes import ROOT, within


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *command], cwd=ROOT, text=True,
                          capture_output=True, timeout=within(180))


def test_ruff() -> None:
    out = run("ruff", "check", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy() -> None:
    out = run("mypy", "--ignore-missing-imports", "actors", "messages", "protocol",
              "supervisor.py", "demo.py")
    assert out.returncode == 0, out.stdout + out.stderr
