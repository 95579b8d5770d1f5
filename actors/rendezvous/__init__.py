"""The rendezvous service as an actor tree: edge (Starlette + uvicorn), registry, pairing, stun.

``rendezvous_spec`` (in ``tree``) builds the tree. The edge holds the live WebSocket connections
and a ledger of what the registry and the pairing actor told it about each one; after a kill -9
the registry and the pairing actor rebuild their state from that ledger (``read_ledger``), so no
worker has to reconnect.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from actors.actor import Ref
from messages.errors import AskTimeout, RemoteError
from messages.rendezvous import LedgerRequest

log = logging.getLogger(__name__)

# A rebuild waits for the edge, which may itself be starting (at the tree's first start the
# edge is the last child up); each ask is retried rather than given one long timeout.
LEDGER_ASK_TIMEOUT = 2.0


async def read_ledger(edge: Ref) -> tuple[list[dict[str, Any]], int]:
    """Every live session the edge holds, and the edge's next connection id."""
    sessions: list[dict[str, Any]] = []
    snapshot_id = 0
    while True:
        try:
            page = await _ask_until_answered(edge, LedgerRequest(snapshot_id, len(sessions)))
        except RemoteError:  # the edge restarted and forgot the snapshot: start over
            sessions, snapshot_id = [], 0
            continue
        snapshot_id = page["snapshot_id"]
        sessions.extend(page["sessions"])
        if not page["more"]:
            return sessions, int(page["next_connection_id"])


async def _ask_until_answered(edge: Ref, request: LedgerRequest) -> dict[str, Any]:
    while True:
        try:
            return await edge.ask(request, LEDGER_ASK_TIMEOUT)
        except AskTimeout:
            log.info("waiting for the edge to hand over its ledger")
            await asyncio.sleep(0)


__all__ = ["read_ledger", "LEDGER_ASK_TIMEOUT"]
