"""What the quic actor keeps across its restarts: the offer, the path, and the chats.

Chats live in an ``Outbox``/``Inbox`` saved under ``ctx.rundir`` with the offer and the path, so a
kill -9 of the quic actor loses no chat and repeats none (``protocol.tunnel.chat``).
"""

from __future__ import annotations

import logging
from typing import Any

from actors.worker.state_files import load_state, save_state
from messages.errors import DecodeError
from messages.worker import PathStatus, PeerOffer
from protocol.tunnel.chat import Inbox, Outbox

log = logging.getLogger(__name__)


class QuicStateFile:
    """Mixed into ``QuicActor``, which names the ``file`` and holds the rest."""

    file: str
    offer: PeerOffer | None
    path: PathStatus | None
    outbox: Outbox
    inbox: Inbox

    def save(self) -> None:
        """Offer, path, outbox and inbox, atomically. Called after each chat is queued (before it
        can reach the wire), after each chat is handed to the UI and after each ack."""
        save_state(self.file, {
            "offer": plain(self.offer), "path": plain(self.path),
            "outbox": self.outbox.to_plain(), "inbox": self.inbox.to_plain()})

    def restore(self) -> bool:
        """What an earlier incarnation saved; True if it had a peer."""
        saved = load_state(self.file)
        if not isinstance(saved, dict):
            return False
        try:
            self.outbox = Outbox.from_plain(saved.get("outbox"))
            self.inbox = Inbox.from_plain(saved.get("inbox"))
            self.offer = PeerOffer(**saved["offer"]) if saved.get("offer") else None
            self.path = PathStatus(**saved["path"]) if saved.get("path") else None
        except (DecodeError, TypeError, KeyError) as exc:
            log.warning("unusable saved tunnel state ignored: %s", exc)
            return False
        log.info("restored: peer %s, %d chats pending", self.offer and self.offer.peer_id,
                 len(self.outbox.pending))
        return self.offer is not None


def plain(msg: Any) -> dict[str, Any] | None:
    return None if msg is None else {f: getattr(msg, f) for f in msg.__dataclass_fields__}


