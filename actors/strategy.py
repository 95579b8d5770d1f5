"""What a supervisor does when a child exits: the decision alone, with no process in sight.

``RestartPlan`` is fed exits and ``now`` and answers with a ``Decision``; the supervisor shell
carries it out. That keeps OTP's rules (strategy, restart type, intensity, backoff) testable
without starting anything.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from actors.spec import Restart, Strategy


@dataclass(frozen=True)
class Ignore:
    """Nothing to restart: the child stays down (temporary, or transient that exited normally)."""

    name: str
    reason: str


@dataclass(frozen=True)
class RestartChildren:
    """Stop ``stop`` (in reverse start order), wait ``delay`` s, start ``start`` in order."""

    stop: tuple[str, ...]
    start: tuple[str, ...]
    delay: float


@dataclass(frozen=True)
class Escalate:
    """Restart intensity exceeded: stop every child and exit, so the parent decides."""

    reason: str


Decision = Ignore | RestartChildren | Escalate


class RestartPlan:
    def __init__(
        self,
        children: list[tuple[str, Restart]],
        strategy: Strategy,
        *,
        max_restarts: int,
        period: float,
        backoff: float = 0.0,
        backoff_max: float = 0.0,
    ) -> None:
        self.order = [name for name, _ in children]
        self.types = dict(children)
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.period = period
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.restarts: deque[float] = deque()
        self.down: set[str] = set()  # children that stay stopped until restarted by hand

    def child_exited(self, name: str, abnormal: bool, now: float,
                     charged: bool = True) -> Decision:
        """``charged=False``: a restart that does not count against the intensity (a repeat
        crash on a message that is on its way to being a dead letter); it is immediate."""
        kind = self.types[name]
        if kind is Restart.TEMPORARY or (kind is Restart.TRANSIENT and not abnormal):
            self.down.add(name)
            return Ignore(name, f"{kind} child exited {'abnormally' if abnormal else 'normally'}")
        recent = self._recent(now)
        if charged and recent >= self.max_restarts:
            return Escalate(
                f"{recent} restarts within {self.period:g} s, then another exit ({name}): "
                f"over the intensity max_restarts={self.max_restarts}"
            )
        if charged:
            self.restarts.append(now)
        affected = self._affected(name)
        stop = tuple(n for n in reversed(affected) if n != name)
        start = tuple(n for n in affected if n == name or self.types[n] is not Restart.TEMPORARY)
        self.down.update(n for n in affected if n not in start)
        return RestartChildren(stop=stop, start=start,
                               delay=self._delay(recent) if charged else 0.0)

    def refund(self) -> None:
        """Give back the unit of intensity a crash was charged: the message that caused it has
        been set aside as a dead letter, so the crash was the message's fault, not the child's.
        With it, poison messages, however many, never escalate."""
        if self.restarts:
            self.restarts.pop()

    def stopped_by_hand(self, name: str) -> None:
        self.down.add(name)

    def started_by_hand(self, name: str) -> None:
        self.down.discard(name)

    def _recent(self, now: float) -> int:
        while self.restarts and now - self.restarts[0] > self.period:
            self.restarts.popleft()
        return len(self.restarts)

    def _affected(self, name: str) -> list[str]:
        live = [n for n in self.order if n not in self.down or n == name]
        if self.strategy is Strategy.ONE_FOR_ONE:
            return [name]
        if self.strategy is Strategy.ONE_FOR_ALL:
            return live
        return live[live.index(name):]  # rest_for_one: it and every child started after it

    def _delay(self, recent: int) -> float:
        # The first restart in a quiet period is immediate; repeats back off exponentially so a
        # child failing on a missing resource does not spin.
        if recent == 0 or self.backoff <= 0:
            return 0.0
        return min(self.backoff * 2 ** (recent - 1), self.backoff_max)
