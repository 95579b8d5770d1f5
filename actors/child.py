"""The body of every actor process: tie its life to its supervisor's, load the actor, hand it to
its runner (``actors.async_runner`` or, for ``blocking`` actors, ``actors.runner``), exit with its
code. A nested supervisor's process runs ``actors.nested`` instead.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import signal
import sys
import threading
from multiprocessing import forkserver
from multiprocessing.connection import Connection
from typing import Any

from actors import logs
from actors.actor import Actor
from actors.boot import EXIT_ORPHANED, Boot
from actors.spec import ChildSpec, SupervisorSpec

PR_SET_PDEATHSIG = 1
NESTED = "actors.nested:run_nested"

log = logging.getLogger("actors.child")


def main(boot: Boot) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the root's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the fork server ignores it; we must not
    die_with_parent(boot.death)
    logs.configure(boot.log_level, boot.path)
    import messages.catalog  # noqa: F401  every tag known in every process
    if isinstance(boot.spec, SupervisorSpec):
        leave(load(NESTED)(boot))
    assert isinstance(boot.spec, ChildSpec)
    from actors.async_runner import AsyncRunner
    from actors.runner import BlockingRunner

    cls = load(boot.spec.actor)
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise TypeError(f"{boot.spec.actor} is not an Actor class")
    runner = BlockingRunner(boot, cls) if cls.blocking else AsyncRunner(boot, cls)
    leave(runner.run())


def leave(code: int) -> None:
    """Exit at once: the supervisor is waiting, and nothing in multiprocessing's exit handlers
    is ours to wait for."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def die_with_parent(death: Connection) -> None:
    """Never outlive the supervisor, even one killed with SIGKILL, even while stuck in C code.

    The kernel's part: our parent is the supervisor's fork server, which exits when the
    supervisor does (once no child holds its "alive" pipe); PR_SET_PDEATHSIG then sends us
    SIGKILL, with no help from this process (a thread of ours could not run while another holds
    the GIL). The pipe's part: the write
    end of ``death`` lives only in the supervisor, so EOF means it is gone; a thread exits at
    once (normally sooner than the kernel path, and with a known exit code), and reading it
    once here covers a supervisor that died before the death signal was armed.
    """
    # multiprocessing hands every child the write end of its fork server's "alive" pipe, so the
    # fork server outlives its creator for as long as any child lives. Ours never use it: close
    # it, so the fork server exits with the supervisor and the kernel's signal reaches us.
    keeper = getattr(forkserver, "_forkserver")  # noqa: B009  private: no public way to do it
    if keeper._forkserver_alive_fd is not None:
        os.close(keeper._forkserver_alive_fd)
        keeper._forkserver_alive_fd = None
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("PR_SET_PDEATHSIG unavailable", extra={"errno": ctypes.get_errno()})
    if death.poll(0):
        _watch(death)  # EOF already: the supervisor is gone

    threading.Thread(target=_watch, args=(death,), name="parent-watch", daemon=True).start()


def _watch(death: Connection) -> None:
    try:
        while True:
            death.recv_bytes()
    except (EOFError, OSError):
        os._exit(EXIT_ORPHANED)


def load(target: str) -> Any:
    """``package.module:name``, imported by name: an actor class, or the nested runner."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
