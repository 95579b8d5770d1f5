"""The STUN actor: runs the embedded Binding responder (``stun_udp.serve_stun``) on the UDP socket
its supervisor bound, so a restart keeps the port. Malformed datagrams are counted there and
never reach this actor's mailbox; ``StunStatsRequest`` reads the counters."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from actors.actor import Actor
from actors.rendezvous.stun_udp import StunResponder, serve_stun
from messages.rendezvous import StunStatsRequest


class StunActor(Actor):
    async def on_start(self) -> None:
        self.transport: asyncio.DatagramTransport
        self.responder: StunResponder
        self.transport, self.responder = await serve_stun(self.ctx.sockets["stun"])

    def on_receive(self, msg: Any) -> Any:
        if isinstance(msg, StunStatsRequest):
            return asdict(self.responder.stats)
        return super().on_receive(msg)

    def on_stop(self) -> None:
        self.transport.close()
