"""State files: what an actor keeps across its restarts, one msgpack file per actor and thing.

The files live under the run directory (``ctx.rundir``), so they last as long as the run does. A
write replaces the file atomically; an unreadable file reads as nothing saved.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import msgpack

log = logging.getLogger(__name__)


def state_file(rundir: str, path: str, what: str) -> str:
    """Where actor ``path`` keeps ``what`` across its restarts (the run directory's life)."""
    return os.path.join(rundir, f"{path.replace('/', '.')}.{what}.state")


def save_state(file: str, state: Any) -> None:
    """Replace ``file`` atomically: a kill -9 mid-write leaves the old state, never half."""
    temp = f"{file}.{os.getpid()}.tmp"
    with open(temp, "wb") as out:
        out.write(msgpack.packb(state, use_bin_type=True))
    os.replace(temp, file)


def load_state(file: str) -> Any:
    try:
        with open(file, "rb") as f:
            return msgpack.unpackb(f.read(), raw=False)
    except FileNotFoundError:
        return None
    except (ValueError, msgpack.UnpackException):
        log.warning("unreadable state file %s ignored", file)
        return None


def remove_state(file: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(file)
