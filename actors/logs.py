"""Structured logs: one line per event, ``key=value`` fields after the message.

``P2P_LOG_FORMAT=json`` switches to JSON lines. Every line names the actor path and pid. Values
that are secrets never reach a log call in the first place (tokens, keys): callers log their
fingerprints or lengths instead.
"""

from __future__ import annotations

import json
import logging
import os
import sys

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "actor"}


class KeyValueFormatter(logging.Formatter):
    def __init__(self, actor: str, as_json: bool) -> None:
        super().__init__()
        self.actor = actor
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        when = self.formatTime(record, "%H:%M:%S") + f".{int(record.msecs):03d}"
        if self.as_json:
            line = {"ts": record.created, "level": record.levelname, "actor": self.actor,
                    "pid": record.process, "logger": record.name, "msg": record.getMessage()}
            line.update({k: _plain(v) for k, v in fields.items()})
            if record.exc_info:
                line["traceback"] = self.formatException(record.exc_info)
            return json.dumps(line)
        extra = " ".join(f"{k}={_plain(v)}" for k, v in fields.items())
        text = f"{when} {record.levelname:<7} {self.actor}[{record.process}] {record.getMessage()}"
        if extra:
            text += f" {extra}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _plain(value: object) -> object:
    return value if isinstance(value, (int, float, bool)) or value is None else str(value)


def configure(level: int, actor: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter(actor, os.environ.get("P2P_LOG_FORMAT") == "json"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
