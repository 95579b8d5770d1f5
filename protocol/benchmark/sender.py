"""One benchmark run towards one peer, sans-I/O (aioquic-style API).

START announces the session (repeated until the receiver's first REPORT answers it), then DATA
chunks of at most ``MAX_CHUNK`` bytes go out at the pacer's rate, each with the next seq. When
the payload is exhausted, END (seq ``END_MARKER``, with the chunk count, size and SHA-256) is
repeated every ``end_interval`` until the receiver's RESULT arrives, so a lost end marker costs
one interval, and a receiver that never answers gives ``SendFailed`` after ``result_timeout``
rather than a hung run. Lost chunks are not resent: the run measures the path, and the loss.

    STARTING -> SENDING -> ENDING -> FINISHED
    any of the three    ----------> FAILED | CANCELLED

``datagrams_to_send`` returns bytes for the one peer the shell runs this sender towards; the
shell hands it the peer's REPORT and RESULT datagrams (``frames.toward_sender``).
"""

from __future__ import annotations

import collections
import enum
import hashlib
import logging

from messages.errors import DecodeError, IllegalTransition, UsageError
from protocol.benchmark import frames
from protocol.benchmark.events import (
    SendCancelled,
    SenderEvent,
    SendFailed,
    SendFinished,
    SendProgress,
)
from protocol.benchmark.pacing import Pacer
from protocol.benchmark.payload import PayloadSource

logger = logging.getLogger(__name__)

MAX_BATCH = 64  # datagrams per call, so a shell stays responsive at any rate
CANCEL_COPIES = 3  # CANCEL is never acknowledged; three copies survive moderate loss


class SendState(enum.Enum):
    STARTING = "starting"
    SENDING = "sending"
    ENDING = "ending"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


_ENDS = frozenset({SendState.FAILED, SendState.CANCELLED})
TRANSITIONS: dict[SendState, frozenset[SendState]] = {
    SendState.STARTING: frozenset({SendState.SENDING}) | _ENDS,
    SendState.SENDING: frozenset({SendState.ENDING}) | _ENDS,
    SendState.ENDING: frozenset({SendState.FINISHED}) | _ENDS,
    SendState.FINISHED: frozenset(),
    SendState.FAILED: frozenset(),
    SendState.CANCELLED: frozenset(),
}


class BenchmarkSender:
    """Sends ``source`` as session ``session_id``; ``rate`` in bytes/s, None for adaptive."""

    def __init__(self, session_id: int, source: PayloadSource, now: float, *,
                 rate: float | None = None, chunk_size: int = frames.MAX_CHUNK,
                 resend_interval: float = 0.2, answer_timeout: float = 5.0,
                 progress_interval: float = 0.25) -> None:
        if not 0 <= session_id <= 0xFFFFFFFF or not 0 < chunk_size <= frames.MAX_CHUNK:
            raise UsageError(f"bad benchmark settings: session {session_id}, chunk {chunk_size}")
        self.session_id, self.state = session_id, SendState.STARTING
        self.ignored: collections.Counter[str] = collections.Counter()
        self.pacer = Pacer(rate, now)
        self.bytes_sent = self.chunks_sent = self.ends_sent = 0
        self._source, self._chunk_size, self._sha = source, chunk_size, hashlib.sha256()
        self._resend, self._answer_timeout = resend_interval, answer_timeout
        self._progress_interval, self._next_progress_at = progress_interval, now
        self._next_control_at, self._deadline = now, now + answer_timeout
        self._first_data_at = now
        self._last_report: frames.Report | None = None
        self._starved = False  # a streamed source has nothing buffered yet
        self._outbox: list[bytes] = []
        self._events: collections.deque[SenderEvent] = collections.deque()

    # -- the aioquic-style API ------------------------------------------------------------

    def receive_datagram(self, data: bytes, now: float) -> None:
        try:
            frame = frames.decode(data)
        except DecodeError:
            self.ignored["undecodable"] += 1
            return
        if frame.session_id != self.session_id:
            self.ignored["other_session"] += 1
        elif isinstance(frame, frames.Report):
            self._on_report(frame, now)
        elif isinstance(frame, frames.Result):
            self._on_result(frame, now)
        else:
            self.ignored["not_for_sender"] += 1

    def datagrams_to_send(self, now: float) -> list[bytes]:
        out, self._outbox = self._outbox, []
        if self.state is SendState.STARTING and now >= self._next_control_at:
            self._next_control_at = now + self._resend
            out.append(frames.encode(frames.Start(self.session_id, self._announced_size(),
                                                  self._chunk_size)))
        elif self.state is SendState.SENDING:
            self._send_chunks(out, now)
        if self.state is SendState.ENDING and now >= self._next_control_at:
            out.append(self._end_marker(now))
        if self.state in (SendState.SENDING, SendState.ENDING) and now >= self._next_progress_at:
            self._progress(now)
        return out

    def get_timer(self) -> float | None:
        if self.state in (SendState.FINISHED, SendState.FAILED, SendState.CANCELLED):
            return None
        timers = [self._deadline]
        if self.state is SendState.SENDING:
            timers.append(self._next_progress_at)
            if not self._starved:
                timers.append(self.pacer.ready_at())
        else:
            timers.append(self._next_control_at)
        return min(timers)

    def handle_timer(self, now: float) -> None:
        if self.state in (SendState.FINISHED, SendState.FAILED, SendState.CANCELLED):
            return
        if now >= self._deadline:
            self._fail(self._timeout_reason())

    def next_event(self) -> SenderEvent | None:
        return self._events.popleft() if self._events else None

    def cancel(self, now: float) -> None:
        """Stops the run and tells the receiver; a finished run stays as it was."""
        if self.state in (SendState.FINISHED, SendState.FAILED, SendState.CANCELLED):
            return
        self._transition(SendState.CANCELLED)
        self._outbox += [frames.encode(frames.Cancel(self.session_id))] * CANCEL_COPIES
        self._events.append(SendCancelled(self.session_id, self.bytes_sent))

    @property
    def sha256(self) -> bytes:
        """The digest of every byte sent so far (the whole payload once ENDING)."""
        return self._sha.digest()

    # -- sending ---------------------------------------------------------------------------

    def _send_chunks(self, out: list[bytes], now: float) -> None:
        sent = 0
        while sent < MAX_BATCH and self.pacer.may_send(now):
            chunk = self._source.read(self._chunk_size)
            self._starved = not chunk and not self._source.finished
            if not chunk:
                if self._source.finished:
                    self._transition(SendState.ENDING)
                    self._deadline, self._next_control_at = now + self._answer_timeout, now
                return
            self._sha.update(chunk)
            datagram = frames.encode_data(self.session_id, self.chunks_sent, chunk)
            out.append(datagram)
            self.pacer.sent(len(datagram), now)
            self.chunks_sent += 1
            self.bytes_sent += len(chunk)
            sent += 1

    def _end_marker(self, now: float) -> bytes:
        self._next_control_at = now + self._resend
        self.ends_sent += 1
        return frames.encode(frames.End(self.session_id, self.chunks_sent, self.bytes_sent,
                                        self._sha.digest()))

    def _announced_size(self) -> int:
        size = self._source.total_size
        return frames.UNKNOWN_SIZE if size is None else size

    # -- what the receiver says ------------------------------------------------------------

    def _on_report(self, report: frames.Report, now: float) -> None:
        if self.state in (SendState.FINISHED, SendState.FAILED, SendState.CANCELLED):
            return
        if self._last_report is not None and report.report_seq <= self._last_report.report_seq:
            self.ignored["stale_report"] += 1
            return
        self._last_report = report
        self.pacer.on_report(report)
        if self.state is SendState.STARTING:
            self._transition(SendState.SENDING)
            self._first_data_at = self._next_progress_at = now
        if self.state is SendState.SENDING:
            self._deadline = now + self._answer_timeout  # the receiver is still there

    def _on_result(self, result: frames.Result, now: float) -> None:
        if self.state in (SendState.FINISHED, SendState.FAILED, SendState.CANCELLED):
            self.ignored["late_result"] += 1
        elif result.status is frames.Status.REJECTED:
            self._fail("the receiver is busy: it already runs its maximum of sessions")
        elif self.state is SendState.ENDING:
            self._transition(SendState.FINISHED)
            self._events.append(SendFinished(self.session_id, result, self.bytes_sent,
                                             self.chunks_sent, self._sha.digest(),
                                             now - self._first_data_at))
        else:
            self._fail(f"the receiver ended the session early: {result.status.name.lower()}")

    def _progress(self, now: float) -> None:
        self._next_progress_at = now + self._progress_interval
        elapsed = now - self._first_data_at
        rate = self.bytes_sent / elapsed if elapsed > 0 else 0.0
        total = self._source.total_size
        eta = (total - self.bytes_sent) / rate if total is not None and rate > 0 else None
        report = self._last_report
        event = SendProgress(self.session_id, self.bytes_sent, total, rate, self.pacer.rate,
                             report.bytes_received if report else 0, self.pacer.last_goodput,
                             self.pacer.last_loss, eta)
        if self._events and isinstance(self._events[-1], SendProgress):
            self._events[-1] = event  # a shell that drains slowly sees the latest, not a backlog
        else:
            self._events.append(event)

    # -- ending ----------------------------------------------------------------------------

    def _timeout_reason(self) -> str:
        wait = self._answer_timeout
        if self.state is SendState.STARTING:
            return (f"no answer to START within {wait} s: is the peer a worker with the "
                    "benchmark, and is the UDP path up?")
        if self.state is SendState.SENDING:
            return f"the receiver stopped reporting for {wait} s: the path or the peer is down"
        seen = self._last_report.bytes_received if self._last_report else 0
        return (f"no RESULT within {wait} s of the end marker ({self.ends_sent} sent); "
                f"the receiver had counted {seen} of {self.bytes_sent} bytes")

    def _fail(self, reason: str) -> None:
        self._transition(SendState.FAILED)
        logger.warning("benchmark session %08x failed: %s", self.session_id, reason)
        self._events.append(SendFailed(self.session_id, reason))

    def _transition(self, new: SendState) -> None:
        """The one place the state changes (``TRANSITIONS``)."""
        if new not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"benchmark sender cannot go from {self.state.value} "
                                    f"to {new.value}")
        logger.info("benchmark session %08x: %s -> %s", self.session_id, self.state.value,
                    new.value)
        self.state = new
