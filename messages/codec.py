"""Typed messages: frozen dataclasses under stable integer tags, encoded with msgpack.

A message class is declared with ``@message(Tag.X)``; the tag table is ``messages.tags.Tag``.
On the wire a message is ``[tag, [field, ...]]``; an ``ask`` adds ``corr``, ``reply_to`` and the
asker's deadline. A mailbox datagram is an 8-byte *stamp* (the sending socket's random id and a
sequence number: no two datagrams a process sends are alike, which is how a restarted actor tells
the datagram its predecessor held from a new one) followed by a *batch*: a msgpack array of
envelopes.

Decoding takes hostile bytes. It checks the frame size before unpacking, every tag against the
registry and every field against its declared type, and raises only ``DecodeError`` (or a
subclass), never anything else: the receiver counts, logs and carries on.
"""

from __future__ import annotations

import dataclasses
import operator
import os
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, NamedTuple

import msgpack

from messages.errors import DecodeError, FrameTooLarge, UnknownMessage, UsageError

# One mailbox datagram. Unix datagram sockets refuse datagrams above the sender's SO_SNDBUF
# (212992 bytes by default on Linux), so a batch stays well below it; bigger payloads do not
# belong on a mailbox.
MAX_FRAME_BYTES = 64 * 1024
STAMP_BYTES = 8
# Nesting inside one field (lists of dicts of ...): bounds the validator's recursion.
MAX_DEPTH = 8

_REGISTRY: dict[int, type] = {}
_FIELDS: dict[type, tuple[Callable[[Any], Any], tuple[Callable[[Any, int], bool], ...]]] = {}


class Envelope(NamedTuple):
    """A decoded message and, for an ``ask``, where its reply goes."""

    msg: Any
    corr: int = 0
    reply_to: str | None = None
    deadline: float = 0.0  # an ask's, on CLOCK_MONOTONIC; 0: none


def message(tag: int) -> Callable[[type], type]:
    """Register a frozen dataclass under ``tag`` (a ``Tag`` member)."""

    def register(cls: type) -> type:
        if not (dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen):  # type: ignore[attr-defined]
            raise UsageError(f"{cls.__name__} must be a frozen dataclass")
        if int(tag) in _REGISTRY:
            raise UsageError(f"tag {int(tag)} is taken by {_REGISTRY[int(tag)].__name__}")
        cls.TAG = int(tag)  # type: ignore[attr-defined]
        _REGISTRY[int(tag)] = cls
        _FIELDS[cls] = _field_plan(cls)
        return cls

    return register


def _field_plan(cls: type) -> tuple[Callable[[Any], Any], tuple[Callable[[Any, int], bool], ...]]:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    return _getter(names), tuple(_checker(hints[n]) for n in names)


def _getter(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    """The field values of a message as a tuple, in declaration order."""
    if not names:
        return lambda _m: ()
    get = operator.attrgetter(*names)
    return (lambda m: (get(m),)) if len(names) == 1 else get


def _checker(hint: Any) -> Callable[[Any, int], bool]:
    """A predicate ``(value, depth) -> bool`` for one declared field type."""
    if hint is Any:
        return _plain
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Literal:  # one of the listed values, of their own types
        allowed = frozenset((type(a), a) for a in args)
        return lambda v, d: (type(v), v) in allowed
    if origin in (typing.Union, types.UnionType):
        subs = tuple(_checker(a) for a in args)
        return lambda v, d: any(c(v, d) for c in subs)
    if origin in (list, tuple):
        item = _checker(args[0]) if args else _plain
        return lambda v, d: isinstance(v, list) and d < MAX_DEPTH and all(item(x, d + 1) for x in v)
    if origin is dict:
        val = _checker(args[1]) if args else _plain
        return lambda v, d: (
            isinstance(v, dict) and d < MAX_DEPTH
            and all(isinstance(k, str) and val(x, d + 1) for k, x in v.items())
        )
    return _scalar(hint)


def _scalar(hint: Any) -> Callable[[Any, int], bool]:
    if hint is type(None) or hint is None:
        return lambda v, d: v is None
    if hint is bool:
        return lambda v, d: isinstance(v, bool)
    if hint is int:
        return lambda v, d: isinstance(v, int) and not isinstance(v, bool)
    if hint is float:
        return lambda v, d: isinstance(v, (int, float)) and not isinstance(v, bool)
    if hint in (str, bytes):
        return lambda v, d: isinstance(v, hint)
    raise UsageError(f"message fields cannot be of type {hint!r}")


def _plain(value: Any, depth: int) -> bool:
    """Anything msgpack itself produces (Any fields), bounded in depth."""
    if isinstance(value, (list, dict)):
        if depth >= MAX_DEPTH:
            return False
        items = value.values() if isinstance(value, dict) else value
        return all(_plain(x, depth + 1) for x in items)
    return True


def encode_envelope(msg: Any, corr: int = 0, reply_to: str | None = None,
                    deadline: float = 0.0) -> list[Any]:
    """The msgpack-ready form of one message. An ask's ``deadline`` (CLOCK_MONOTONIC, 0 for
    none) lets its receiver skip it once the asker has given up."""
    try:
        getter, _ = _FIELDS[type(msg)]
    except KeyError:
        raise UsageError(f"{type(msg).__name__} is not a registered message") from None
    fields = list(getter(msg))
    if reply_to is None:
        return [msg.TAG, fields]
    if deadline:
        return [msg.TAG, fields, corr, reply_to, deadline]
    return [msg.TAG, fields, corr, reply_to]


def stamp_bytes(stamp: int) -> bytes:
    return stamp.to_bytes(STAMP_BYTES, "big")


def pack_batch(envelopes: Iterable[list[Any]], stamp: int | None = None) -> bytes:
    """A whole mailbox datagram (stamp and batch), as tools and tests send one; a random stamp
    unless one is given."""
    if stamp is None:
        stamp = int.from_bytes(os.urandom(STAMP_BYTES), "big")
    data = stamp_bytes(stamp) + msgpack.packb(list(envelopes), use_bin_type=True)
    if len(data) > MAX_FRAME_BYTES:
        raise UsageError(f"batch of {len(data)} bytes exceeds MAX_FRAME_BYTES={MAX_FRAME_BYTES}")
    return data


def encode(msg: Any, corr: int = 0, reply_to: str | None = None,
           stamp: int | None = None) -> bytes:
    """One message as a datagram with a batch of one."""
    return pack_batch([encode_envelope(msg, corr, reply_to)], stamp)


def unpack_batch(data: bytes) -> list[Envelope]:
    """Decode a mailbox datagram; raises only DecodeError."""
    return [decode_envelope(item) for item in unpack_raw(data)]


def unpack_raw(data: bytes) -> list[Any]:
    """The envelopes of a datagram, not yet decoded, so one bad envelope spoils only itself."""
    if len(data) > MAX_FRAME_BYTES:
        raise FrameTooLarge(f"frame of {len(data)} bytes exceeds {MAX_FRAME_BYTES}")
    if len(data) < STAMP_BYTES + 1:
        raise DecodeError(f"a datagram of {len(data)} bytes is shorter than its stamp and batch")
    try:
        raw = msgpack.unpackb(memoryview(data)[STAMP_BYTES:], raw=False, use_list=True,
                              strict_map_key=True)
    except Exception as exc:  # msgpack raises a zoo of types on hostile input
        raise DecodeError(f"not msgpack: {type(exc).__name__}: {exc}") from None
    if not isinstance(raw, list):
        raise DecodeError(f"a batch is a msgpack array, got {type(raw).__name__}")
    return raw


def decode_envelope(item: Any) -> Envelope:
    if not isinstance(item, list) or len(item) not in (2, 4, 5):
        raise DecodeError("an envelope is [tag, fields] or [tag, fields, corr, reply_to"
                          "(, deadline)]")
    tag, fields = item[0], item[1]
    cls = _REGISTRY.get(tag) if isinstance(tag, int) and not isinstance(tag, bool) else None
    if cls is None:
        raise UnknownMessage(f"unknown message tag {tag!r}")
    msg = _build(cls, fields)
    if len(item) == 2:
        return Envelope(msg)
    corr, reply_to = item[2], item[3]
    deadline = item[4] if len(item) == 5 else 0.0
    if (not isinstance(corr, int) or not isinstance(reply_to, str) or len(reply_to) > 256
            or not isinstance(deadline, (int, float)) or isinstance(deadline, bool)):
        raise DecodeError(f"bad ask header on {cls.__name__}")
    return Envelope(msg, corr, reply_to, float(deadline))


def _build(cls: type, fields: Any) -> Any:
    checks = _FIELDS[cls][1]
    if not isinstance(fields, list) or len(fields) != len(checks):
        raise DecodeError(f"{cls.__name__} takes {len(checks)} fields")
    for i, (value, ok) in enumerate(zip(fields, checks)):
        if not ok(value, 0):
            name = dataclasses.fields(cls)[i].name
            raise DecodeError(f"{cls.__name__}.{name}: unexpected {type(value).__name__}")
    return cls(*fields)


def registered() -> dict[int, type]:
    """The tag table as registered (for docs and tests)."""
    return dict(_REGISTRY)


class Message:
    """Marker base so type checkers know a message has a TAG."""

    TAG: ClassVar[int]


__all__ = [
    "MAX_FRAME_BYTES", "STAMP_BYTES", "Envelope", "Message", "message", "encode", "encode_envelope",
    "pack_batch", "unpack_batch", "unpack_raw", "decode_envelope", "registered",
]
