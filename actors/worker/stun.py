"""The stun actor: the public mapping of the udp actor's socket, and the NAT type behind it.

Every Binding request leaves through ``udp`` (``UdpSend``) and every answer comes back from it
(``UdpReceived``), so the mapping found is the one of the socket that punches and carries QUIC,
never of a temporary socket (the original's flaw, seeds/003). ``StunTransaction`` does RFC 8489
§6.2.1 retransmission; an RFC 3489 request is the fallback when the RFC 5389 one fails. pystun3
blocks, so its NAT tests run in ``NatTypeProbe``, a pykka ThreadingActor in this process, fed
through a ``ForwardingSocket`` with the answers udp forwards; only when the server announced a
second address (CHANGED-ADDRESS / OTHER-ADDRESS, RFC 5780 §7.3), since a one-address server
cannot answer CHANGE-REQUEST and the type measured against it would be meaningless.

Config (besides the worker settings ``stun_host``/``stun_port``), all optional: ``stun_interval``
(s between checks, 60), ``stun_retry`` (first delay after a failure, doubling up to the
interval, 2), ``stun_rto`` (0.5) and ``stun_max_transmits`` (7) as in RFC 8489, ``nat_timeout``
(s pystun3 waits per try, 2).

``StatusRequest`` answers ``{ok, public_ip, public_port, nat_type, reason, server, checks}``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from typing import Any

import pykka

from actors.actor import Actor
from actors.worker.stun_socket import ForwardingSocket, detect_nat_type
from messages.errors import DecodeError
from messages.worker import RedoStun, StatusRequest, StunResult, UdpReceived, UdpSend, UiEvent
from protocol.stun import Address, parse_message
from protocol.stun.client import BindingEvent, BindingFailed, BindingSucceeded, StunTransaction

logger = logging.getLogger(__name__)

ONE_ADDRESS = "unknown (server has one address)"
NOT_TESTED = "unknown (not tested yet)"


class NatTypeProbe(pykka.ThreadingActor):
    """pystun3's RFC 3489 §10.1 tests, which block for seconds, on a thread of their own."""

    use_daemon_thread = True  # a test in flight must not hold the process on its way out

    def detect(self, sock: ForwardingSocket, host: str, port: int) -> str:
        return detect_nat_type(sock, host, port)[0]


class StunActor(Actor):
    def on_start(self) -> None:
        cfg = self.ctx.config
        self.interval = float(cfg.get("stun_interval", 60.0))
        self.retry = float(cfg.get("stun_retry", 2.0))
        self.rto = float(cfg.get("stun_rto", 0.5))
        self.max_transmits = int(cfg.get("stun_max_transmits", 7))
        self.udp = self.ctx.ref("udp")
        self.result = StunResult(False, "", 0, NOT_TESTED, "not checked yet")
        self.server: Address | None = None
        self.checks = 0
        self.classic = False  # the server answered only RFC 3489 last time
        self.transaction: StunTransaction | None = None
        self.answer = b""
        self.arrived = asyncio.Event()
        self.redo = asyncio.Event()
        self.nat_socket: ForwardingSocket | None = None
        self.probe = NatTypeProbe.start().proxy()
        self.loop = asyncio.get_running_loop()
        self.task = self.ctx.spawn(self.keep_checking())

    def on_receive(self, msg: Any) -> Any:
        if isinstance(msg, UdpReceived):
            return self.received(msg)
        if isinstance(msg, RedoStun):
            return self.redo.set()
        if isinstance(msg, StatusRequest):
            return self.status()
        return super().on_receive(msg)

    def on_stop(self) -> None:
        self.task.cancel()
        self.probe.actor_ref.stop(block=False)

    def received(self, msg: UdpReceived) -> None:
        """An answer ends our transaction; anything else may be pystun3's, while it runs."""
        for data in msg.payloads:
            tx = self.transaction
            if tx is not None and tx.receive_datagram(data, (msg.host, msg.port), self.loop.time()):
                self.answer = data
                self.arrived.set()
            elif self.nat_socket is not None:
                self.nat_socket.deliver(data, (msg.host, msg.port))

    def status(self) -> dict[str, Any]:
        r = self.result
        return {"ok": r.ok, "public_ip": r.host, "public_port": r.port, "nat_type": r.nat_type,
                "reason": r.reason, "server": list(self.server or ()), "checks": self.checks}

    async def keep_checking(self) -> None:
        failures = 0
        while True:
            forced = self.redo.is_set()
            self.redo.clear()
            ok = await self.check(forced)
            failures = 0 if ok else failures + 1
            delay = self.interval if ok else min(self.interval, self.retry * 2 ** (failures - 1))
            try:
                await asyncio.wait_for(self.redo.wait(), delay)
            except TimeoutError:
                pass

    async def check(self, forced: bool) -> bool:
        """One check; a forced one (``RedoStun``) tests the NAT type again and shows the UI."""
        self.checks += 1
        try:
            self.server = await self.resolve()
        except (OSError, UnicodeError) as exc:  # gaierror; idna refuses some names
            host = self.ctx.config["stun_host"]
            self.report(StunResult(False, "", 0, self.result.nat_type,
                                   f"cannot resolve STUN host {host!r}: {exc}"), forced)
            return False
        event = await self.bind(self.server)
        if isinstance(event, BindingFailed):
            self.report(StunResult(False, "", 0, self.result.nat_type, event.reason), forced)
            return False
        (host, port), nat_type = event.mapped, self.result.nat_type
        if (host, port) != (self.result.host, self.result.port) or forced:
            nat_type = NOT_TESTED if self.second_address() else ONE_ADDRESS
        self.report(StunResult(True, host, port, nat_type, ""), forced)
        if nat_type == NOT_TESTED:  # after the report: the mapping is what peers wait for
            self.report(StunResult(True, host, port, await self.nat_type(), ""), forced)
        return True

    async def resolve(self) -> Address:
        """The server's address, looked up once per check (getaddrinfo runs in an executor)."""
        host, port = self.ctx.config["stun_host"], int(self.ctx.config["stun_port"])
        family = socket.AF_INET6 if ":" in self.ctx.config.get("udp_host", "") else socket.AF_INET
        infos = await self.loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
        return str(infos[0][4][0]), int(infos[0][4][1])

    async def bind(self, server: Address) -> BindingEvent:
        """RFC 5389 first; RFC 3489 when that fails (a classic server may drop or refuse it)."""
        event = await self.transact(server, self.classic)
        if isinstance(event, BindingFailed) and not self.classic:
            classic = await self.transact(server, True)
            if isinstance(classic, BindingSucceeded):
                self.classic = True
                return classic
        return event

    async def transact(self, server: Address, classic: bool) -> BindingEvent:
        tx = StunTransaction(server, self.loop.time(), rto=self.rto,
                             max_transmits=self.max_transmits, classic=classic)
        self.transaction = tx
        try:
            while (event := tx.next_event()) is None:
                self.send(tx.datagrams_to_send(self.loop.time()))
                self.arrived.clear()
                timer = tx.get_timer() or self.loop.time()
                try:
                    await asyncio.wait_for(self.arrived.wait(), max(0.0, timer - self.loop.time()))
                except TimeoutError:
                    tx.handle_timer(self.loop.time())
            return event
        finally:
            self.transaction = None

    def send(self, datagrams: list[tuple[bytes, Address]]) -> None:
        for data, (host, port) in datagrams:
            self.udp.tell(UdpSend(host, port, [data]))

    def second_address(self) -> bool:
        """Whether the last answer names the server's other address (RFC 5780 §7.3)."""
        try:
            answer = parse_message(self.answer)
        except DecodeError:
            return False
        return any(answer.attribute(name) for name in ("OTHER-ADDRESS", "CHANGED-ADDRESS"))

    async def nat_type(self) -> str:
        """pystun3 over the udp actor's socket, through a ForwardingSocket fed by ``received``."""
        assert self.server is not None
        send = lambda data, addr: self.loop.call_soon_threadsafe(  # noqa: E731
            self.udp.tell, UdpSend(addr[0], addr[1], [data]))
        self.nat_socket = ForwardingSocket(send, self.local_address(),
                                           timeout=float(self.ctx.config.get("nat_timeout", 2.0)))
        try:
            future = self.probe.detect(self.nat_socket, *self.server)
            return str(await self.loop.run_in_executor(None, future.get))
        except Exception as exc:  # pystun3 reads answers naively; its failure is not ours
            logger.warning("NAT type test failed", exc_info=exc)
            return f"unknown (NAT test failed: {type(exc).__name__})"
        finally:
            self.nat_socket = None

    def local_address(self) -> Address:
        """Our side of the path, which pystun3 compares with the mapping to spot 'no NAT'. A
        wildcard bind is resolved by asking the kernel's route to the server; a connect() on
        a UDP socket sends nothing, so no mapping is created or changed by it."""
        host, port = self.ctx.config.get("udp_host", "0.0.0.0"), self.ctx.config.get("udp_port", 0)
        if not is_wildcard(host) or self.server is None:
            return host, int(port)
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                           socket.SOCK_DGRAM) as route:
            route.connect(self.server)
            return route.getsockname()[0], int(port)

    def report(self, result: StunResult, forced: bool) -> None:
        """Tell rendezvous_client and ui what changed; a forced check shows the UI in any case."""
        changed, self.result = result != self.result, result
        if changed:
            self.ctx.ref("rendezvous_client").tell(result)
            self.ctx.ref("ui").tell(result)
        if changed or forced:
            self.ctx.ref("ui").tell(UiEvent(ui_payload(result)))
        logger.info("STUN check", extra={"ok": result.ok, "mapped": f"{result.host}:{result.port}",
                                         "nat_type": result.nat_type, "reason": result.reason})


def is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:  # a host name: the kernel binds it to one address
        return False


def ui_payload(result: StunResult) -> dict[str, Any]:
    if not result.ok:
        return {"type": "error", "message": f"STUN: {result.reason}"}
    return {"type": "stun_update", "public_ip": result.host, "public_port": result.port,
            "nat_type": result.nat_type}

