"""The command line: help, one-line configuration errors with exit code 2, and the control
commands against a real running tree."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.processes import ROOT, within


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "supervisor.py"), *args], text=True,
                          capture_output=True, timeout=within(60),
                          env={**os.environ, **(env or {})})


def test_help_lists_the_commands() -> None:
    out = cli("--help")
    assert out.returncode == 0
    for command in ("rendezvous", "worker", "demo", "tree", "restart", "stop", "events"):
        assert command in out.stdout


def test_a_malformed_setting_is_one_line_naming_it_with_exit_2() -> None:
    out = cli("rendezvous", env={"PORT": "eighty"})
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["supervisor.py: PORT='eighty' is not a whole number"]


def test_a_bad_flag_exits_2() -> None:
    out = cli("rendezvous", "--port", "70000")
    assert out.returncode == 2 and "outside 0-65535" in out.stderr


def test_control_commands_need_a_live_run_directory(tmp_path) -> None:  # noqa: ANN001
    out = cli("tree", "t", "--rundir", str(tmp_path / "nothing"))
    assert out.returncode == 2 and "is not the run directory" in out.stderr


def test_tree_and_restart_against_a_running_tree(run_tree) -> None:  # noqa: ANN001
    tree = run_tree("basic")
    shown = cli("tree", "t", "--rundir", tree.rundir)
    assert shown.returncode == 0
    assert [line.split()[0] for line in shown.stdout.splitlines()] == ["t", "a", "blk", "sub", "c"]
    assert cli("restart", "t/sub/c", "--rundir", tree.rundir).stdout.strip() == "restarted"
    again = cli("tree", "t", "--json", "--rundir", tree.rundir)
    node = next(n for n in __import__("json").loads(again.stdout) if n["path"] == "t/sub/c")
    assert node["restarts"] == 1 and node["state"] == "running"
