"""A nested supervisor's process: the subtree's mailboxes it was handed, its own heartbeat, and
the same supervision as the root's (``actors.tree.supervise``)."""

from __future__ import annotations

import signal
import threading
import time

from actors.boot import Boot
from actors.control import ControlBlock
from actors.spec import SupervisorSpec
from actors.tree import Tree, all_preloads, context, supervise


def run_nested(boot: Boot) -> int:
    spec = boot.spec
    assert isinstance(spec, SupervisorSpec)
    control = ControlBlock(boot.control_file)
    control.claim()  # one incarnation of this supervisor at a time
    control.beat(time.monotonic())
    mailboxes = dict(boot.mailboxes)
    mailboxes[boot.path] = boot.mailbox
    tree = Tree(boot.rundir, mailboxes, parent=boot.path.rsplit("/", 1)[0],
                log_level=boot.log_level)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return supervise(spec, tree, context(all_preloads(spec)), boot, stop, None, path=boot.path,
                     control=control)
