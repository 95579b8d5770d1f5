"""When the sender may put the next datagram on the wire, and at what rate.

A fixed target rate, or an adaptive one driven by the receiver's reports, so that a run measures
the path rather than how much a receive buffer can swallow in one burst:

- an interval with more than ``LOSS_THRESHOLD`` loss: ``rate = min(rate, goodput) * 0.8``
  (multiplicative decrease, to just under what actually arrived);
- a clean interval: ``rate = goodput * 1.25`` (probe 25 % above what arrived), capped at
  ``max_rate``; a rate the sender cannot reach, or that only fills the receive buffer, does
  not ratchet up: it follows what arrived.

The pacer is a token bucket whose depth is ``BURST`` seconds of sending: a shell woken late
catches up at most that much at once instead of flooding the path.
"""

from __future__ import annotations

from messages.errors import UsageError
from protocol.benchmark.frames import Report

BURST = 0.004  # seconds of credit: a shell with a ~1 ms timer still sends in small trains
LOSS_THRESHOLD = 0.02
INITIAL_ADAPTIVE_RATE = 2_000_000.0  # bytes/s: safe on any path; ~20 reports reach 100 MB/s
MIN_RATE = 50_000.0
MAX_RATE = 1_000_000_000.0


class Pacer:
    """A token bucket at ``rate`` bytes/s; ``adaptive`` lets receiver reports move the rate."""

    def __init__(self, rate: float | None, now: float, *, max_rate: float = MAX_RATE) -> None:
        if rate is not None and rate <= 0:
            raise UsageError(f"target rate {rate} must be > 0 bytes/s (or None: adaptive)")
        self.adaptive = rate is None
        self.rate = INITIAL_ADAPTIVE_RATE if rate is None else rate
        self.max_rate = max_rate
        self.last_loss = 0.0
        self.last_goodput: float | None = None
        self._next_at = now
        self._last: Report | None = None

    def ready_at(self) -> float:
        return self._next_at

    def may_send(self, now: float) -> bool:
        return now >= self._next_at

    def sent(self, size: int, now: float) -> None:
        self._next_at = max(self._next_at, now - BURST) + size / self.rate

    def on_report(self, report: Report) -> None:
        last, sample = self._last, report
        self._last = report
        if last is None or sample.elapsed_us <= last.elapsed_us or sample.expected <= last.expected:
            return
        interval_s = (sample.elapsed_us - last.elapsed_us) / 1e6
        self.last_loss = 1 - (sample.chunks - last.chunks) / (sample.expected - last.expected)
        self.last_goodput = (sample.bytes_received - last.bytes_received) / interval_s
        if self.adaptive:
            self._adapt(self.last_loss, self.last_goodput)

    def _adapt(self, loss: float, goodput: float) -> None:
        if loss > LOSS_THRESHOLD:
            self.rate = max(MIN_RATE, min(self.rate, goodput) * 0.8)
        else:
            self.rate = min(self.max_rate, max(MIN_RATE, goodput * 1.25))
