"""What the benchmark cores tell their shells: frozen events, not to be subclassed."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.benchmark.frames import Result, Status
from protocol.stun import Address


@dataclass(frozen=True)
class SendProgress:
    session_id: int
    bytes_sent: int
    total_bytes: int | None  # None while a streamed download's length is unknown
    send_rate: float  # bytes/s put on the wire since the start
    target_rate: float  # bytes/s the pacer aims at now
    receiver_bytes: int  # as of the receiver's last report
    receiver_goodput: float | None  # bytes/s between the receiver's last two reports
    loss: float  # in the same interval
    eta: float | None  # seconds to the end at the current rate, when the size is known


@dataclass(frozen=True)
class SendFinished:
    """The receiver's RESULT arrived; ``sha256_match`` compares its digest with ours."""

    session_id: int
    result: Result
    bytes_sent: int
    chunks_sent: int
    sha256: bytes
    duration: float  # from the first DATA to the RESULT, on the sender's clock

    @property
    def sha256_match(self) -> bool:
        return self.result.status is Status.COMPLETE and self.result.sha256 == self.sha256


@dataclass(frozen=True)
class SendFailed:
    session_id: int
    reason: str  # what went wrong and where to look, for the UI


@dataclass(frozen=True)
class SendCancelled:
    session_id: int
    bytes_sent: int


SenderEvent = SendProgress | SendFinished | SendFailed | SendCancelled


@dataclass(frozen=True)
class SessionStarted:
    peer: Address
    session_id: int
    total_size: int | None


@dataclass(frozen=True)
class ReceiveProgress:
    peer: Address
    session_id: int
    bytes_received: int
    chunks: int
    lost: int  # chunks given up for lost so far (gaps older than the reorder window)
    goodput: float  # bytes/s since the session's first chunk


@dataclass(frozen=True)
class SessionFinished:
    peer: Address
    result: Result


ReceiverEvent = SessionStarted | ReceiveProgress | SessionFinished
