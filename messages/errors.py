"""The project's one error hierarchy.

    P2PError                      code + reason a user can act on
    ├── UsageError                our own misuse: bad settings, an illegal state transition
    │   ├── ConfigError           a missing or malformed setting (the CLI exits 2 with it)
    │   └── IllegalTransition     a state machine was driven out of its table
    ├── PeerError                 a peer (process, socket, server) misbehaved
    │   ├── DecodeError           hostile or malformed bytes: msgpack, JSON, STUN, datagrams
    │   │   ├── FrameTooLarge     over a documented size limit
    │   │   └── UnknownMessage    a tag or ``type`` nobody declared
    │   └── AuthError             a peer failed to prove its identity
    └── ActorError                the actor runtime
        ├── AskTimeout            no reply within the ask's timeout
        ├── ActorUnavailable      the target cannot take messages (its tree is gone)
        │   ├── NoSuchActor       no mailbox by that name (a mistyped path, a dead asker)
        │   └── MailboxFull       a sender's own bounded queue for that target is full
        └── RemoteError           the handler of an ``ask`` raised; carries its type and text

Decoders raise only ``DecodeError`` (and its subclasses) on any input; tests hold them to that.
"""

from __future__ import annotations


class P2PError(Exception):
    """Root of every error the project raises on purpose."""

    code = "error"

    def __init__(self, reason: str, *, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


class UsageError(P2PError):
    code = "usage"


class ConfigError(UsageError):
    code = "config"


class IllegalTransition(UsageError):
    code = "illegal_transition"


class PeerError(P2PError):
    code = "peer"


class DecodeError(PeerError):
    code = "decode"


class FrameTooLarge(DecodeError):
    code = "too_large"


class UnknownMessage(DecodeError):
    code = "unknown_message"


class AuthError(PeerError):
    code = "auth"


class ActorError(P2PError):
    code = "actor"


class AskTimeout(ActorError):
    code = "ask_timeout"


class ActorUnavailable(ActorError):
    code = "unavailable"


class NoSuchActor(ActorUnavailable):
    code = "no_such_actor"


class MailboxFull(ActorUnavailable):
    """A sender holds its limit of bytes for a mailbox that takes nothing: a bound, not a
    leak. The caller may retry later; the messages already queued are kept."""

    code = "mailbox_full"


class RemoteError(ActorError):
    """An ``ask`` handler raised; ``remote_type`` names the exception class."""

    code = "remote"

    def __init__(self, remote_type: str, reason: str) -> None:
        super().__init__(f"{remote_type}: {reason}")
        self.remote_type = remote_type
        self.remote_reason = reason


__all__ = [
    "P2PError", "UsageError", "ConfigError", "IllegalTransition", "PeerError", "DecodeError",
    "FrameTooLarge", "UnknownMessage", "AuthError", "ActorError", "AskTimeout",
    "ActorUnavailable", "NoSuchActor", "MailboxFull", "RemoteError",
]
