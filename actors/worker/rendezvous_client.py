"""The rendezvous_client actor: the worker's WebSocket to the rendezvous service (seeds/000 §2.1).

It connects to ``{rendezvous_url}/ws/register/{worker_id}`` (with ``Authorization: Bearer`` and
``?token=`` when config ``token`` is set) and, on every connection, sends ``register_public_ip``
(the address ``/whoami`` or ``ip_echo_url`` sees, and the certificate fingerprint), then
``update_udp_endpoint`` with the latest ``StunResult``, and again on every changed one. A lost
connection is retried for ever with exponential backoff and jitter, so after a rendezvous restart
the worker re-registers by itself; a graceful stop sends ``explicit_deregister`` first.

Identity: when the handshake carries the service's ``X-Identity-Challenge``, the first message
is ``identity_proof`` (the certificate and a signature over the challenge with its key), so the
service binds our worker id to our key and nobody else can take it over. With config
``peer_fingerprints`` (out-of-band pins) an offer whose peer fingerprint is not among them is
refused, so a compromised rendezvous service cannot introduce a stranger.

Offers go to ``udp`` and ``quic`` as ``PeerOffer``; ``peer_disconnected`` as ``PeerGone``. What
the service sends is decoded by ``protocol.rendezvous.client_wire``.

``StatusRequest`` answers: ``connected``, ``registered`` (the service acknowledged our endpoint),
``worker_id``, ``public_ip``, ``endpoint`` ([ip, port] last sent, or None), ``last_offer`` (the
PeerOffer's fields, or None once the peer is gone: udp and quic ask for it after a restart),
``reconnects``, ``last_error``, ``path_state``, ``tunnel_state``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import random
from typing import Any
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from actors.actor import Actor
from actors.worker.settings import as_bytes
from messages.errors import ActorError, DecodeError
from messages.worker import (
    PathStatus,
    PeerGone,
    PeerOffer,
    StatusRequest,
    StunResult,
    TunnelStatus,
    UiEvent,
)
from protocol.rendezvous import wire
from protocol.rendezvous.client_wire import (
    MAX_MESSAGE,
    identity_proof,
    offer_from_json,
    server_message,
)
from protocol.rendezvous.identity import CHALLENGE_HEADER

logger = logging.getLogger(__name__)

BACKOFF_FIRST, BACKOFF_CAP = 0.25, 10.0  # seconds before the first and the longest retry
STABLE = 10.0  # a connection that lasted this long starts the backoff afresh


def reconnect_delay(attempt: int, rng: random.Random, cap: float = BACKOFF_CAP) -> float:
    """Exponential backoff with equal jitter: many workers cut off by one rendezvous restart
    come back spread out instead of all at once."""
    ceiling = min(cap, BACKOFF_FIRST * 2 ** min(attempt, 32))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


class RendezvousClient(Actor):
    def on_start(self) -> None:
        cfg = self.ctx.config
        self.worker_id: str = cfg["worker_id"]
        self.ws: ClientConnection | None = None
        self.stun: StunResult | None = None
        self.endpoint: tuple[str, int] | None = None
        self.offer: PeerOffer | None = None
        self.state: dict[str, Any] = {"connected": False, "registered": False, "public_ip": None,
                                      "reconnects": 0, "last_error": "", "path_state": None,
                                      "tunnel_state": None}
        self.stopping = False
        self.loop = asyncio.get_running_loop()
        self.task = self.ctx.spawn(self.keep_connected())

    async def on_receive(self, msg: Any) -> Any:
        if isinstance(msg, StunResult):
            self.stun = msg if msg.ok else self.stun  # a failed check keeps the last mapping
            return await self.send_endpoint()
        if isinstance(msg, StatusRequest):
            return self.status()
        if isinstance(msg, PathStatus | TunnelStatus):
            self.state["path_state" if isinstance(msg, PathStatus) else "tunnel_state"] = msg.state
            return None
        return super().on_receive(msg)

    async def on_stop(self) -> None:
        self.stopping = True
        if self.ws is not None:
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                await asyncio.wait_for(self.say({"type": "explicit_deregister"}), 1.0)
                await asyncio.wait_for(self.ws.close(1001, "worker stopping"), 1.0)
        self.task.cancel()

    def status(self) -> dict[str, Any]:
        offer = dataclasses.asdict(self.offer) if self.offer else None
        return {**self.state, "worker_id": self.worker_id, "last_offer": offer,
                "endpoint": list(self.endpoint) if self.endpoint else None}

    # -- the connection ---------------------------------------------------------------------

    async def keep_connected(self) -> None:
        rng, attempt = random.Random(), 0
        await self.recall_stun()
        while not self.stopping:
            started = self.loop.time()
            try:
                await self.connect_once()
            except (OSError, TimeoutError, WebSocketException) as exc:
                self.lost(f"{type(exc).__name__}: {exc}")
            attempt = 0 if self.loop.time() - started >= STABLE else attempt + 1
            self.state["reconnects"] += 1
            await asyncio.sleep(reconnect_delay(attempt, rng))

    async def recall_stun(self) -> None:
        """After a restart of this actor only: the mapping the stun actor already found."""
        try:
            found = await self.ctx.ref("stun").ask(StatusRequest(), 2.0)
        except ActorError as exc:
            logger.info("no STUN mapping from the stun actor yet", extra={"error": str(exc)})
            return
        if self.stun is None and isinstance(found, dict) and found.get("ok"):
            self.stun = StunResult(True, found["public_ip"], int(found["public_port"]),
                                   str(found.get("nat_type", "")), "")

    async def connect_once(self) -> None:
        cfg, token = self.ctx.config, self.ctx.config.get("token") or ""
        url = f"{cfg['rendezvous_url']}/ws/register/{self.worker_id}"
        url += f"?token={quote(token, safe='')}" if token else ""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.ui_status("connecting", f"connecting to {cfg['rendezvous_url']}")
        async with connect(url, additional_headers=headers, open_timeout=10.0,
                           ping_interval=float(cfg.get("ping_interval", 25.0)),
                           ping_timeout=float(cfg.get("ping_timeout", 25.0)),
                           max_size=MAX_MESSAGE) as ws:
            await self.register(ws)
            try:
                async for text in ws:
                    self.handle(text)
            finally:
                self.ws, self.endpoint = None, None
            self.lost(f"closed by the service: {ws.close_code} {ws.close_reason}".strip())

    async def register(self, ws: ClientConnection) -> None:
        """identity_proof first (if challenged), then register_public_ip, as in the original;
        then the endpoint, if known."""
        self.state.update(connected=True, registered=False, last_error="")
        nonce = ws.response.headers.get(CHALLENGE_HEADER) if ws.response else None
        if nonce and self.ctx.config.get("key_pem"):
            cfg = self.ctx.config
            await ws.send(wire.encode(identity_proof(self.worker_id, nonce,
                                                     as_bytes(cfg["cert_pem"]),
                                                     as_bytes(cfg["key_pem"]))))
        self.ui_status("connected", "connected to the rendezvous service")
        ip = self.state["public_ip"] = await self.public_ip()
        if ip is not None:
            await ws.send(wire.encode({"type": "register_public_ip", "ip": ip,
                                       "cert_fingerprint": self.ctx.config.get("fingerprint")}))
        self.ws, self.endpoint = ws, None
        await self.send_endpoint()

    async def public_ip(self) -> str | None:
        """Our address as an HTTP service sees it: JSON ``{"ip": ...}`` or plain text."""
        base = self.ctx.config["rendezvous_url"].replace("ws", "http", 1)
        url = self.ctx.config.get("ip_echo_url") or f"{base}/whoami"
        try:
            async with httpx.AsyncClient(timeout=5.0) as http:
                body = (await http.get(url)).raise_for_status().text.strip()
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                body = json.loads(body).get("ip")
            return str(ipaddress.ip_address(body))
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            logger.warning("public IP lookup failed", extra={"url": url, "error": str(exc)})
            return None

    async def send_endpoint(self) -> None:
        if self.ws is None or self.stun is None or self.endpoint == (self.stun.host,
                                                                     self.stun.port):
            return
        self.endpoint = (self.stun.host, self.stun.port)
        await self.say({"type": "update_udp_endpoint", "udp_ip": self.stun.host,
                        "udp_port": self.stun.port,
                        "cert_fingerprint": self.ctx.config.get("fingerprint")})

    async def say(self, message: dict[str, Any]) -> None:
        if self.ws is not None:
            with contextlib.suppress(ConnectionClosed):  # the receive loop reconnects
                await self.ws.send(wire.encode(message))

    def lost(self, reason: str) -> None:
        self.state.update(connected=False, registered=False, last_error=reason)
        if not self.stopping:
            logger.warning("rendezvous connection lost", extra={"reason": reason})
            self.ui_status("disconnected", f"rendezvous connection lost ({reason}); retrying")

    # -- what the service says ------------------------------------------------------------

    def handle(self, text: str | bytes) -> None:
        try:
            obj = server_message(text)
            handler = HANDLERS.get(obj["type"])
            if handler is None:
                logger.info("message type from the service ignored", extra={"type": obj["type"]})
            else:
                handler(self, obj)
        except DecodeError as exc:
            logger.warning("bad message from the rendezvous service", extra={"error": str(exc)})

    def acknowledged(self, obj: dict[str, Any]) -> None:
        if obj.get("status") == wire.ACK_ERROR:
            self.ui({"type": "error", "message": f"rendezvous refused our endpoint: "
                                                 f"{str(obj.get('detail'))[:200]}"})
            return
        self.state["registered"] = True
        self.ui_status("registered", f"registered with UDP endpoint {self.endpoint}")

    def offered(self, obj: dict[str, Any]) -> None:
        offer = PeerOffer(**dataclasses.asdict(offer_from_json(obj, self.worker_id)))
        pins = self.ctx.config.get("peer_fingerprints") or ()
        if pins and offer.peer_fingerprint not in pins:
            logger.warning("offer refused: peer fingerprint not pinned",
                           extra={"peer": offer.peer_id, "fingerprint": offer.peer_fingerprint})
            self.ui({"type": "error", "message": f"offer from the rendezvous refused: peer "
                                                 f"{offer.peer_id} has no pinned fingerprint"})
            return
        self.offer = offer
        self.ctx.ref("udp").tell(offer)
        self.ctx.ref("quic").tell(offer)
        self.ui({"type": "p2p_status_update", "peer_id": offer.peer_id,
                 "message": f"paired with {offer.peer_id} at {offer.host}:{offer.port} "
                            f"(QUIC {offer.quic_role}); punching"})

    def peer_left(self, obj: dict[str, Any]) -> None:
        peer_id = str(obj.get("peer_worker_id") or (self.offer and self.offer.peer_id) or "")
        if self.offer is None or self.offer.peer_id != peer_id:
            return  # about a pairing we no longer hold
        reason = str(obj.get("reason") or "disconnected")[:200]
        self.offer = None
        self.ctx.ref("udp").tell(PeerGone(peer_id, reason))
        self.ctx.ref("quic").tell(PeerGone(peer_id, reason))
        self.ui({"type": "p2p_status_update", "peer_id": peer_id,
                 "message": f"peer {peer_id} left the rendezvous ({reason})"})

    def identified(self, obj: dict[str, Any]) -> None:
        logger.info("the service accepted our identity",
                    extra={"fingerprint": str(obj.get("cert_fingerprint"))[:64]})

    def refused(self, obj: dict[str, Any]) -> None:
        self.ui({"type": "error", "message": f"rendezvous: {str(obj.get('message'))[:300]}"})

    def echoed(self, obj: dict[str, Any]) -> None:
        payload = obj.get("payload")
        text = payload if isinstance(payload, str) else wire.encode(payload)
        self.ui({"type": "rendezvous_echo_response",
                 "payload": text[:wire.MAX_ECHO_PAYLOAD_BYTES]})

    def ui_status(self, state: str, message: str) -> None:
        self.ui({"type": "rendezvous_status", "state": state, "message": message})

    def ui(self, payload: dict[str, Any]) -> None:
        self.ctx.ref("ui").tell(UiEvent(payload))


HANDLERS = {"udp_endpoint_ack": RendezvousClient.acknowledged,
            "p2p_connection_offer": RendezvousClient.offered,
            "peer_disconnected": RendezvousClient.peer_left,
            "error": RendezvousClient.refused, "echo_response": RendezvousClient.echoed,
            "identity_accepted": RendezvousClient.identified}

