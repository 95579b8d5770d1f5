"""Messages of the actor runtime: replies, fault injection, the supervisor's control API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from messages.codec import message
from messages.tags import Tag


@message(Tag.REPLY)
@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to an ``ask``: a value, or the handler's error (type name and text)."""

    ok: bool
    value: Any
    error_type: str = ""
    error: str = ""


@message(Tag.FAULT)
@dataclass(frozen=True, slots=True)
class Fault:
    """Fault injection, handled by the runtime before ``on_receive``.

    ``kind``: ``crash`` (the process dies at once, exit 70), ``raise`` (the handler raises),
    ``hang`` (the actor stops beating and blocks), ``exit`` (a normal exit, code 0), ``stall``
    (blocks inside C code *holding the GIL*, as a stuck extension would: no thread of the
    process runs again).
    """

    kind: str


FAULT_KINDS = ("crash", "raise", "hang", "exit", "stall")


@message(Tag.TREE_REQUEST)
@dataclass(frozen=True, slots=True)
class TreeRequest:
    """Ask a supervisor for its subtree: a list of node dicts (see ``actors.tree``)."""


@message(Tag.RESTART_CHILD)
@dataclass(frozen=True, slots=True)
class RestartChild:
    path: str


@message(Tag.STOP_CHILD)
@dataclass(frozen=True, slots=True)
class StopChild:
    path: str


@message(Tag.SUBSCRIBE)
@dataclass(frozen=True, slots=True)
class Subscribe:
    """Send every tree event of this supervisor (and below) to the actor at ``path``."""

    path: str


@message(Tag.TREE_EVENT)
@dataclass(frozen=True, slots=True)
class TreeEvent:
    """started, exited, restarted, escalated, stopped, dead_letter."""

    kind: str
    path: str
    pid: int
    reason: str
    at: float


@message(Tag.DEAD_LETTER)
@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message set aside after crashing its receiver ``attempts`` times."""

    path: str
    tag: int
    attempts: int
    summary: str


@message(Tag.PROBE)
@dataclass(frozen=True, slots=True)
class Probe:
    """A small test/benchmark message: ``seq`` from ``sender``."""

    sender: str
    seq: int
    payload: bytes = b""


@message(Tag.PROBE_BATCH)
@dataclass(frozen=True, slots=True)
class ProbeBurst:
    """Ask a probe actor to tell ``count`` probes to ``target``."""

    target: str
    count: int


@message(Tag.RECORD)
@dataclass(frozen=True, slots=True)
class RecordRequest:
    """Ask a probe actor what it has received so far."""


@message(Tag.RECORDED)
@dataclass(frozen=True, slots=True)
class Record:
    seqs: dict[str, list[int]]
