"""The run directory: where a tree's mailboxes, control blocks and actors' state files live.

Without ``--rundir`` the root makes a private one under /dev/shm (tmpfs: mailboxes and control
blocks are memory) and removes it at exit; run directories of roots killed with SIGKILL are
reaped by the next root. A directory the user names is the user's: at exit the root removes only
what this run created there (the tree's mailboxes and control blocks, its actors' new state files,
``root.pid``), and the directory itself only if the root created it and it is empty.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field

log = logging.getLogger("actors.tree")

PREFIX = "p2p-"
OWNER_FILE = "root.pid"


@dataclass
class RunDir:
    path: str
    created: bool  # created here (a private temporary one, or a named one that did not exist)
    private: bool  # a temporary directory nobody else knows: removed whole
    tree: str  # the root's name: every file of the tree starts with it
    before: set[str] = field(default_factory=set)  # what was there already
    actors: set[str] = field(default_factory=set)  # the tree's paths, as file names

    @classmethod
    def open(cls, given: str | None, tree: str) -> RunDir:
        if given is None:
            reap_stale(tmp())
            return cls(tempfile.mkdtemp(prefix=PREFIX, dir=tmp()), True, True, tree)
        existed = os.path.isdir(given)
        os.makedirs(given, exist_ok=True)
        return cls(given, not existed, False, tree, set(os.listdir(given)) if existed else set())

    def claim(self, paths: list[str]) -> None:
        """Take the directory for the tree whose actors are ``paths``."""
        self.actors = {p.replace("/", ".") for p in paths}
        owner = os.path.join(self.path, OWNER_FILE)
        if os.path.islink(owner):
            os.unlink(owner)
        with open(owner, "w") as f:
            f.write(str(os.getpid()))

    def ours(self, name: str) -> bool:
        """A file this run made: a mailbox or control block of the tree, an actor's state file
        (``<actor>.<what>.state``) that was not there before, or the owner file."""
        if name == OWNER_FILE:
            return True
        stem, _, kind = name.rpartition(".")
        if kind in ("mbox", "ctl"):
            return stem in self.actors
        return (kind == "state" and name not in self.before
                and any(stem.startswith(actor + ".") for actor in self.actors))

    def close(self) -> None:
        if self.private:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for name in os.listdir(self.path):
            if self.ours(name):
                try:
                    os.unlink(os.path.join(self.path, name))
                except (IsADirectoryError, FileNotFoundError):
                    pass
        if self.created:
            try:
                os.rmdir(self.path)
            except OSError:
                pass  # something else lives there now: it stays


def reap_stale(parent: str) -> None:
    """Remove the private run directories of roots that died without cleaning up (kill -9):
    their mailboxes and control blocks would otherwise stay in memory (tmpfs) for good."""
    for name in os.listdir(parent):
        rundir = os.path.join(parent, name)
        if not name.startswith(PREFIX):
            continue
        try:
            with open(os.path.join(rundir, OWNER_FILE)) as f:
                owner = int(f.read())
        except (OSError, ValueError):
            continue  # not ours, or still being created
        if not os.path.exists(f"/proc/{owner}"):
            log.info("removing the run directory of a dead tree", extra={"rundir": rundir,
                                                                         "pid": owner})
            shutil.rmtree(rundir, ignore_errors=True)


def tmp() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else "/tmp"
