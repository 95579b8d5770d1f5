"""Shared fixtures: real processes, bounded waits, and a check that nothing is left behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import RunningTree, start_tree, stop_tree


@pytest.fixture
def run_tree(tmp_path: Path) -> Iterator:
    started: list[RunningTree] = []

    def run(name: str) -> RunningTree:
        tree = start_tree(name, tmp_path)
        started.append(tree)
        return tree

    yield run
    for tree in started:
        stop_tree(tree)
