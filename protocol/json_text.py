"""JSON objects from hostile text: the one parser of every JSON the project receives (the
rendezvous WebSocket in both directions, the worker UI's commands, the original system's
datagrams). Each caller names what it parses and its size limit, and checks the fields itself.

It raises only ``DecodeError`` (``FrameTooLarge`` for size): the size is checked before
``json.loads`` runs, nesting too deep for the parser is refused, and so are NaN and Infinity,
which are not JSON (RFC 8259 section 6) and could not be sent on as JSON, and so are strings
holding a lone surrogate (``"\\ud800"`` decodes to one), which no UTF-8 frame can carry on.
"""

from __future__ import annotations

import json
from typing import Any

from messages.errors import DecodeError, FrameTooLarge


def json_object(text: str | bytes, *, what: str, limit: int) -> dict[str, Any]:
    """``text`` (at most ``limit`` bytes of UTF-8) as a JSON object, or ``DecodeError``."""
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise FrameTooLarge(f"{what} is at most {limit} bytes: {size} is over the "
                            f"{limit}-byte limit")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as bad_bytes:
            raise DecodeError(f"{what} is not UTF-8 text: {bad_bytes.reason}") from None
    try:
        obj = json.loads(text, parse_constant=refuse_constant)
    except (ValueError, RecursionError) as bad_json:  # RecursionError: "[[[[..." past the stack
        raise DecodeError(f"{what} must be JSON; this is not valid JSON: {bad_json}") from None
    if not isinstance(obj, dict):
        raise DecodeError(f"{what} must be a JSON object, got {type(obj).__name__}")
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise DecodeError(f"{what} holds a string that is not valid Unicode "
                          "(a lone surrogate)") from None
    return obj


def refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")
