"""Every benchmark session arriving at one worker, sans-I/O (aioquic-style API).

Sessions are keyed by (peer address, session id), so two peers, or two runs of one peer, never
mix. A START opens a session (answered at once by a REPORT, which is the sender's go-ahead);
DATA is counted by the session's ``ReceiveWindow``; END (or CANCEL) closes it with a RESULT.
While open, each session reports every ``report_interval`` so the sender can pace to the path.

Memory is bounded: at most ``max_sessions`` open sessions of ~2 MiB each (``window``), a START
beyond that is answered REJECTED; a session silent for ``idle_timeout`` is closed ABANDONED;
closed sessions keep only their RESULT (72 bytes), for ``linger`` seconds and at most
``MAX_CLOSED``, to answer repeated end markers. Undecodable, forged or unexpected datagrams are
dropped and counted in ``ignored`` by reason; none reaches or disturbs another session.
The UDP shell should pass only datagrams from peers it has punched a path to: a START from a
forged source costs a session slot until ``idle_timeout``.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from messages.errors import DecodeError
from protocol.benchmark import frames
from protocol.benchmark.events import (
    ReceiveProgress,
    ReceiverEvent,
    SessionFinished,
    SessionStarted,
)
from protocol.benchmark.window import ReceiveWindow
from protocol.stun import Address

MAX_CLOSED = 64
NO_DIGEST = bytes(frames.SHA256_SIZE)
SessionKey = tuple[Address, int]


@dataclass
class ReceiveSession:
    peer: Address
    session_id: int
    total_size: int | None
    chunk_size: int
    heard_at: float
    first_data_at: float | None = None
    next_report_at: float = 0.0
    report_seq: int = 0
    window: ReceiveWindow = field(default_factory=ReceiveWindow)

    @property
    def max_chunks(self) -> int | None:
        return None if self.total_size is None else -(-self.total_size // self.chunk_size)

    def elapsed_us(self, now: float) -> int:
        return 0 if self.first_data_at is None else round((now - self.first_data_at) * 1e6)

    def report(self, now: float) -> frames.Report:
        self.report_seq += 1
        w = self.window
        return frames.Report(self.session_id, self.report_seq, w.chunks, w.expected,
                             w.bytes_received, self.elapsed_us(now))

    def result(self, status: frames.Status, now: float, digest: bytes | None) -> frames.Result:
        w = self.window
        return frames.Result(self.session_id, status, w.chunks, w.lost, w.duplicates,
                             w.reordered, w.bytes_received, self.elapsed_us(now),
                             digest or NO_DIGEST)


class BenchmarkReceiver:
    def __init__(self, *, max_sessions: int = 8, report_interval: float = 0.1,
                 idle_timeout: float = 10.0, linger: float = 10.0) -> None:
        self.max_sessions, self.report_interval = max_sessions, report_interval
        self.idle_timeout, self.linger = idle_timeout, linger
        self.sessions: dict[SessionKey, ReceiveSession] = {}
        self.ignored: collections.Counter[str] = collections.Counter()
        self._closed: collections.OrderedDict[SessionKey, tuple[frames.Result, float]] = (
            collections.OrderedDict())
        self._outbox: list[tuple[bytes, Address]] = []
        self._events: collections.deque[ReceiverEvent] = collections.deque()

    # -- the aioquic-style API ------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        try:
            frame = frames.decode(data)
        except DecodeError:
            self.ignored["undecodable"] += 1
            return
        key = (addr, frame.session_id)
        session = self.sessions.get(key)
        if isinstance(frame, frames.Report | frames.Result):
            self.ignored["not_for_receiver"] += 1
        elif key in self._closed:
            self._on_closed(key, frame)
        elif isinstance(frame, frames.Start):
            self._on_start(key, frame, now)
        elif session is None:
            self.ignored["unknown_session"] += 1
        else:
            session.heard_at = now
            self._on_frame(session, frame, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        for session in self.sessions.values():
            if now >= session.next_report_at:
                self._send_report(session, now)
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        timers = [min(s.next_report_at, s.heard_at + self.idle_timeout)
                  for s in self.sessions.values()]
        return min(timers, default=None)

    def handle_timer(self, now: float) -> None:
        for session in list(self.sessions.values()):
            if now >= session.heard_at + self.idle_timeout:
                self._close(session, frames.Status.ABANDONED, now, None, answer=False)
        while self._closed and next(iter(self._closed.values()))[1] <= now:
            self._closed.popitem(last=False)

    def next_event(self) -> ReceiverEvent | None:
        return self._events.popleft() if self._events else None

    # -- frames ----------------------------------------------------------------------------

    def _on_start(self, key: SessionKey, start: frames.Start, now: float) -> None:
        session = self.sessions.get(key)
        if session is not None:  # our REPORT answering it was lost: answer again
            session.next_report_at = now
            return
        if len(self.sessions) >= self.max_sessions:
            self.ignored["session_cap"] += 1
            result = frames.Result(start.session_id, frames.Status.REJECTED, 0, 0, 0, 0, 0, 0,
                                   NO_DIGEST)
            self._outbox.append((frames.encode(result), key[0]))
            return
        size = None if start.total_size == frames.UNKNOWN_SIZE else start.total_size
        session = ReceiveSession(key[0], start.session_id, size, start.chunk_size, now,
                                 next_report_at=now)
        self.sessions[key] = session
        self._events.append(SessionStarted(key[0], start.session_id, size))

    def _on_frame(self, session: ReceiveSession, frame: frames.BenchFrame, now: float) -> None:
        if isinstance(frame, frames.Data):
            self._on_data(session, frame, now)
        elif isinstance(frame, frames.End):
            self._on_end(session, frame, now)
        elif isinstance(frame, frames.Cancel):
            self._close(session, frames.Status.CANCELLED, now, None, answer=False)

    def _on_data(self, session: ReceiveSession, data: frames.Data, now: float) -> None:
        limit = session.max_chunks
        if len(data.payload) > session.chunk_size:
            self.ignored["oversized_chunk"] += 1
        elif limit is not None and data.seq >= limit:
            self.ignored["beyond_end"] += 1
        else:
            if session.first_data_at is None:
                session.first_data_at = now
            session.window.accept(data.seq, data.payload)

    def _on_end(self, session: ReceiveSession, end: frames.End, now: float) -> None:
        window = session.window
        window.finish(end.chunks)
        digest = window.digest(end.chunks)
        announced = session.total_size in (None, end.total_bytes)
        if window.lost or window.chunks < end.chunks:
            status = frames.Status.INCOMPLETE
        elif not announced or window.bytes_received != end.total_bytes:
            status = frames.Status.CORRUPT
        elif digest is None:
            status = frames.Status.UNVERIFIED
        else:
            status = frames.Status.COMPLETE if digest == end.sha256 else frames.Status.CORRUPT
        self._close(session, status, now, digest, answer=True)

    def _on_closed(self, key: SessionKey, frame: frames.BenchFrame) -> None:
        """A closed session answers its repeated end markers (its RESULT was lost)."""
        if isinstance(frame, frames.End | frames.Start):
            self._outbox.append((frames.encode(self._closed[key][0]), key[0]))
        else:
            self.ignored["closed_session"] += 1

    # -- reports and results ---------------------------------------------------------------

    def _send_report(self, session: ReceiveSession, now: float) -> None:
        session.next_report_at = now + self.report_interval
        self._outbox.append((frames.encode(session.report(now)), session.peer))
        w = session.window
        elapsed = session.elapsed_us(now)
        goodput = w.bytes_received * 1e6 / elapsed if elapsed else 0.0
        self._push_progress(ReceiveProgress(session.peer, session.session_id, w.bytes_received,
                                            w.chunks, w.lost, goodput))

    def _push_progress(self, event: ReceiveProgress) -> None:
        """Replaces a session's undrained progress: the queue stays one event per session."""
        for i, queued in enumerate(self._events):
            if (isinstance(queued, ReceiveProgress) and queued.peer == event.peer
                    and queued.session_id == event.session_id):
                self._events[i] = event
                return
        self._events.append(event)

    def _close(self, session: ReceiveSession, status: frames.Status, now: float,
               digest: bytes | None, *, answer: bool) -> None:
        key = (session.peer, session.session_id)
        del self.sessions[key]
        result = session.result(status, now, digest)
        self._closed[key] = (result, now + self.linger)
        if len(self._closed) > MAX_CLOSED:
            self._closed.popitem(last=False)
        if answer:
            self._outbox.append((frames.encode(result), session.peer))
        self._events.append(SessionFinished(session.peer, result))
