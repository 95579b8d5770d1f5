"""Child specifications: what a supervisor starts, how, and what it does when a child exits.

The vocabulary is Erlang/OTP's: strategies one_for_one, one_for_all, rest_for_one; restart types
permanent (always restarted), transient (restarted after an abnormal exit only) and temporary
(never restarted); restart intensity ``max_restarts`` within ``period`` seconds, beyond which the
supervisor gives up and escalates to its own parent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from messages.errors import ConfigError

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


class Strategy(StrEnum):
    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


class Restart(StrEnum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


@dataclass(frozen=True)
class SocketSpec:
    """A socket the supervisor binds once and hands to every incarnation of the child, so a
    restart keeps the port (and, for UDP behind a NAT, the mapping)."""

    kind: str  # "udp" or "tcp"
    host: str = "127.0.0.1"
    port: int = 0


@dataclass(frozen=True)
class ChildSpec:
    """An actor process. ``actor`` is an import path, ``"package.module:ClassName"``."""

    name: str
    actor: str
    restart: Restart = Restart.PERMANENT
    shutdown: float = 5.0  # seconds from SIGTERM to SIGKILL
    liveness: float = 3.0  # seconds without a heartbeat before the child counts as hung; 0: off
    start_timeout: float = 15.0  # seconds to report ready
    config: dict[str, Any] = field(default_factory=dict)
    sockets: dict[str, SocketSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name(self.name)


@dataclass(frozen=True)
class SupervisorSpec:
    """A supervisor and its children, started in order and stopped in reverse order."""

    name: str
    children: tuple[ChildSpec | SupervisorSpec, ...]
    strategy: Strategy = Strategy.ONE_FOR_ONE
    max_restarts: int = 5
    period: float = 10.0
    backoff: float = 0.05  # first delay when restarts repeat within the period; doubles each time
    backoff_max: float = 2.0
    # modules the fork server imports once, so restarts skip them (aioquic, cryptography, ...)
    preload: tuple[str, ...] = ()
    # as a child of another supervisor:
    restart: Restart = Restart.PERMANENT
    shutdown: float = 10.0
    liveness: float = 5.0
    start_timeout: float = 30.0

    def __post_init__(self) -> None:
        check_name(self.name)
        names = [c.name for c in self.children]
        if len(set(names)) != len(names):
            raise ConfigError(f"supervisor {self.name!r} has duplicate child names: {names}")


def check_name(name: str) -> None:
    if not NAME.match(name):
        raise ConfigError(f"actor name {name!r} must match {NAME.pattern}")


def walk(spec: SupervisorSpec, prefix: str = "") -> list[tuple[str, ChildSpec | SupervisorSpec]]:
    """Every node below ``spec`` as (path, spec), depth first, in start order."""
    base = f"{prefix}{spec.name}"
    nodes: list[tuple[str, ChildSpec | SupervisorSpec]] = []
    for child in spec.children:
        path = f"{base}/{child.name}"
        nodes.append((path, child))
        if isinstance(child, SupervisorSpec):
            nodes.extend(walk(child, f"{base}/"))
    return nodes
