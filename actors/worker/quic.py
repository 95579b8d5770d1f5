"""The quic actor: the authenticated QUIC tunnel over the udp actor, a thin shell around the
sans-I/O ``TunnelSession`` (``protocol.tunnel.session``: which connection is current, and the
rules for reconnecting).

It feeds the session offers and departures from rendezvous_client, path changes and datagrams
from udp, chats and echoes from the UI, with ``now``; a ``CoreDriver`` sends what it has to send
(one ``UdpSend`` per destination per flush, once per event-loop iteration) and re-arms its one
timer. The session's events become ``TunnelStatus`` for ``ui`` and ``rendezvous_client``, and UI
events.

What survives a kill -9 of this actor: the offer, the path and the chats (``Outbox``/``Inbox``,
``protocol.tunnel.chat``), saved under ``ctx.rundir`` after each chat is queued (before it can
reach the wire), after each chat is handed to the UI and after each ack. So no chat is lost and
none repeated; the new incarnation reconnects (``TunnelSession.recover``).
"""

from __future__ import annotations

import logging
from typing import Any, cast

from actors.actor import Actor
from actors.worker.driver import (
    CoreDriver,
    clock,
    load_state,
    plain,
    save_state,
    send_through_udp,
    state_file,
)
from actors.worker.settings import TunnelSettings
from messages.errors import DecodeError, UsageError
from messages.worker import (
    ChatSend,
    EchoPeer,
    PathStatus,
    PeerGone,
    PeerOffer,
    QuicBenchCancel,
    QuicBenchStatus,
    QuicBenchWrite,
    SessionStateName,
    StatusRequest,
    TunnelStatus,
    UdpReceived,
    UiEvent,
)
from protocol.benchmark.stream import STREAM_MAGIC
from protocol.stun import Address
from protocol.tunnel.chat import Inbox, Outbox
from protocol.tunnel.events import (
    AuthFailed,
    BenchStreamAnswered,
    BenchStreamFailed,
    BenchStreamReceived,
    ChatAcked,
    ChatReceived,
    EchoReplied,
    TunnelState,
)
from protocol.tunnel.session import Peer, Role, SessionChanged, TunnelSession
from protocol.udp.peer_path import PeerPathState

log = logging.getLogger(__name__)

BENCH_STATUS_STEP = 256 * 1024  # a benchmark run hears of its stream's progress in these steps
MB = 1_000_000


class QuicActor(Actor):
    def on_start(self) -> None:
        settings = TunnelSettings.from_config(self.ctx.config)
        self.session = TunnelSession(settings.cert_pem, settings.key_pem,
                                     idle_timeout=settings.quic_idle_timeout,
                                     ping_interval=settings.quic_ping_interval)
        self.driver = CoreDriver(self.session, self.send, self.on_event)
        self.file = state_file(self.ctx.rundir, self.ctx.path, "quic")
        self.offer: PeerOffer | None = None
        self.path: PathStatus | None = None
        self.refs: dict[int, str] = {}  # msg_id in the current outbox -> the UI's chat ref
        self.bench: dict[int, list[int]] = {}  # session id -> [bytes written, sent as told]
        if self.restore():
            self.driver.loop.call_soon(self.recover)

    def on_stop(self) -> None:
        tunnel = self.session.tunnel
        if tunnel is not None and tunnel.state is TunnelState.UP:
            self.session.close("the worker is stopping", clock())
            self.driver.flush()  # the CONNECTION_CLOSE leaves before the process does
        self.driver.stop()

    def on_receive(self, msg: Any) -> Any:
        if isinstance(msg, UdpReceived):
            for payload in msg.payloads:
                self.session.receive_datagram(payload, (msg.host, msg.port), clock())
        elif isinstance(msg, PathStatus):
            self.on_path(msg)
        elif isinstance(msg, PeerOffer):
            self.on_offer(msg)
        elif isinstance(msg, PeerGone):
            self.on_peer_gone(msg)
        elif isinstance(msg, ChatSend):
            self.send_chat(msg.text, msg.ref)
        elif isinstance(msg, EchoPeer):
            self.send_echo(msg.payload)
        elif isinstance(msg, QuicBenchWrite):
            self.bench_write(msg)
        elif isinstance(msg, QuicBenchCancel):
            self.bench.pop(msg.session_id, None)
            if self.session.tunnel is not None:
                self.session.tunnel.bench_cancel(msg.session_id)
        elif isinstance(msg, StatusRequest):
            return self.status()
        else:
            return super().on_receive(msg)
        self.driver.after_input()
        return None

    # -- benchmark runs on a stream (protocol.tunnel.bench) ------------------------------------

    def bench_write(self, write: QuicBenchWrite) -> None:
        """The run's bytes onto its stream; an empty write only asks whether the run is here
        (a restarted quic actor, or a new tunnel, has no such stream: the run ends)."""
        tunnel, known = self.session.tunnel, self.bench.get(write.session_id)
        try:
            if tunnel is None:
                raise UsageError("the QUIC tunnel is down")
            fresh = known is None and write.data.startswith(STREAM_MAGIC)
            if not fresh and (known is None or tunnel.bench_unsent(write.session_id) is None):
                raise UsageError("its stream is gone (the quic actor restarted, or the tunnel "
                                 "was replaced)")
            if write.data or write.end:
                tunnel.bench_write(write.session_id, write.data, write.end, clock())
        except UsageError as exc:
            self.bench.pop(write.session_id, None)
            self.ctx.ref("benchmark").tell(QuicBenchStatus(write.session_id, 0, True, exc.reason))
            return
        run = self.bench.setdefault(write.session_id, [0, 0])
        run[0] += len(write.data)

    def bench_progress(self) -> None:
        """After each flush: how far each run's stream is on the wire, in steps."""
        tunnel = self.session.tunnel
        for session_id, run in self.bench.items():
            unsent = tunnel.bench_unsent(session_id) if tunnel is not None else None
            sent = run[0] - (unsent if unsent is not None else run[0])
            if sent - run[1] >= BENCH_STATUS_STEP or (sent > run[1] and unsent == 0):
                run[1] = sent
                self.ctx.ref("benchmark").tell(QuicBenchStatus(session_id, sent, False))

    def bench_event(self, event: Any) -> None:
        benchmark = self.ctx.ref("benchmark")
        if isinstance(event, BenchStreamAnswered):
            run = self.bench.pop(event.session_id, [0, 0])
            benchmark.tell(QuicBenchStatus(event.session_id, run[0], True, "",
                                           event.bytes_received, event.duration_us,
                                           event.sha256))
        elif isinstance(event, BenchStreamFailed):
            self.bench.pop(event.session_id, None)
            benchmark.tell(QuicBenchStatus(event.session_id, 0, True, event.reason))
        else:
            self.ui(received_result(event))

    # -- the peer, the path, the user -------------------------------------------------------

    def on_offer(self, offer: PeerOffer) -> None:
        if self.session.offer(peer_of(offer), clock()):
            self.path = None
        self.offer = offer
        self.save()
        if self.path is not None and self.path.peer_id == offer.peer_id:
            self.on_path(self.path)  # udp told us about the path before the offer reached us

    def on_path(self, path: PathStatus) -> None:
        if self.offer is None:
            self.path = path
            return
        if path.peer_id != self.offer.peer_id:
            return
        self.path = path
        self.save()
        self.session.path_changed(PeerPathState(path.state), (path.host, path.port),
                                  path.reason, clock())

    def on_peer_gone(self, gone: PeerGone) -> None:
        if self.offer is not None and gone.peer_id == self.offer.peer_id:
            self.session.leave(f"peer left: {gone.reason}", clock())
            self.offer = self.path = None
            self.save()

    def send_chat(self, text: str, ref: str = "") -> None:
        """Queued in the outbox even while down; saved before it can reach the wire. The UI
        hears ``chat_state`` sent (the tunnel is up) or queued, then delivered on the ack."""
        try:
            self.session.send_chat(text, clock())
        except UsageError as exc:
            if ref:
                self.chat_state(ref, "failed", f"QUIC chat not sent: {exc.reason}")
            else:
                self.ui({"type": "error", "message": f"QUIC chat not sent: {exc.reason}"})
            return
        if ref:
            self.refs[self.session.outbox.next_id - 1] = ref
        self.save()
        if ref:
            up = self.session.state.value == "up"
            self.chat_state(ref, "sent" if up else "queued",
                            "" if up else "waits for the tunnel")

    def chat_state(self, ref: str, state: str, reason: str = "") -> None:
        self.ui({"type": "chat_state", "transport": "quic", "ref": ref, "state": state,
                 "reason": reason})

    def chats_acked(self, up_to: int) -> None:
        for msg_id in sorted(i for i in self.refs if i <= up_to):
            self.chat_state(self.refs.pop(msg_id), "delivered")

    def chats_resent(self) -> None:
        """A new tunnel is up: whatever waited in the outbox is on the wire again."""
        pending = {msg_id for msg_id, _ in self.session.outbox.pending}
        for msg_id, ref in sorted(self.refs.items()):
            if msg_id in pending:
                self.chat_state(ref, "sent")

    def send_echo(self, payload: str) -> None:
        try:
            self.session.send_echo(payload.encode("utf-8", "surrogatepass"), clock())
        except UsageError as exc:
            self.ui({"type": "quic_echo_response", "payload": payload, "error": exc.reason})

    def recover(self) -> None:
        self.session.recover(clock())
        self.driver.after_input()

    def status(self) -> dict[str, Any]:
        session, tunnel = self.session, self.session.tunnel
        return {"state": session.state.value, "reason": session.reason,
                "peer_id": self.offer.peer_id if self.offer else "",
                "role": self.offer.quic_role if self.offer else "",
                "tunnel_role": tunnel.role if tunnel else "",
                "tunnel_state": tunnel.state.value if tunnel else "",
                "rtt_ms": round(session.rtt * 1000, 3),
                "pending_chats": len(session.outbox.pending), "dropped": session.dropped}

    # -- the session's output ----------------------------------------------------------------

    def send(self, datagrams: list[tuple[bytes, Address]]) -> None:
        send_through_udp(self.ctx.ref("udp"), datagrams)
        if self.bench:
            self.bench_progress()

    def on_event(self, event: Any) -> None:
        peer = self.offer.peer_id if self.offer else ""
        if isinstance(event, SessionChanged):
            self.publish(event.state.value, event.reason)
            if event.state.value == "up":
                self.chats_resent()
        elif isinstance(event, AuthFailed):
            self.ui({"type": "quic_status_update", "state": "auth_failed", "peer_id": peer,
                     "message": event.reason})
        elif isinstance(event, ChatReceived):
            self.ui({"type": "quic_message_received", "from_peer_id": peer, "content": event.text})
            self.ctx.transport.flush()  # delivered, then remembered: see save()
            self.save()
        elif isinstance(event, ChatAcked):
            self.chats_acked(event.msg_id)
            self.save()
        elif isinstance(event, BenchStreamAnswered | BenchStreamFailed | BenchStreamReceived):
            self.bench_event(event)
        elif isinstance(event, EchoReplied):
            self.ui({"type": "quic_echo_response", "payload": event.payload.decode(
                "utf-8", "replace"), "rtt_ms": round(event.rtt * 1000, 3)})

    def publish(self, state: str, reason: str) -> None:
        peer = self.offer.peer_id if self.offer else ""
        status = TunnelStatus(cast(SessionStateName, state), peer, reason)
        self.ctx.ref("ui").tell(status)
        self.ctx.ref("rendezvous_client").tell(status)
        self.ui({"type": "quic_status_update", "state": state, "peer_id": peer, "message": reason})

    def ui(self, payload: dict[str, Any]) -> None:
        self.ctx.ref("ui").tell(UiEvent(payload))

    # -- what survives a restart -------------------------------------------------------------

    def save(self) -> None:
        """Offer, path, outbox and inbox, atomically."""
        session = self.session
        pending = {msg_id for msg_id, _ in session.outbox.pending}
        self.refs = {i: ref for i, ref in self.refs.items() if i in pending}
        save_state(self.file, {
            "offer": plain(self.offer), "path": plain(self.path),
            "outbox": session.outbox.to_plain(), "inbox": session.inbox.to_plain(),
            "refs": [[i, ref] for i, ref in self.refs.items()]})

    def restore(self) -> bool:
        """What an earlier incarnation saved; True if it had a peer."""
        saved = load_state(self.file)
        if not isinstance(saved, dict):
            return False
        try:
            outbox = Outbox.from_plain(saved.get("outbox"))
            inbox = Inbox.from_plain(saved.get("inbox"))
            self.offer = PeerOffer(**saved["offer"]) if saved.get("offer") else None
            self.path = PathStatus(**saved["path"]) if saved.get("path") else None
            self.refs = {int(i): str(ref) for i, ref in saved.get("refs") or []}
        except (DecodeError, TypeError, KeyError, ValueError) as exc:
            log.warning("unusable saved tunnel state ignored: %s", exc)
            return False
        connected = self.path is not None and self.path.state == PeerPathState.CONNECTED.value
        self.session.restore(peer_of(self.offer) if self.offer else None,
                             (self.path.host, self.path.port) if connected and self.path else None,
                             outbox, inbox)
        log.info("restored: peer %s, %d chats pending", self.offer and self.offer.peer_id,
                 len(outbox.pending))
        return self.offer is not None


def received_result(event: BenchStreamReceived) -> dict[str, Any]:
    """The receiver's ``benchmark_result`` of a QUIC run (the sender's comes from benchmark)."""
    base = {"type": "benchmark_result", "role": "receiver", "mode": "quic",
            "stream_id": event.stream_id}
    verdict = event.verdict
    if verdict is None:
        return {**base, "status": "failed", "ok": False, "error": event.reason}
    seconds = event.duration
    return {**base, "status": "complete" if verdict.sha256_match else "corrupt",
            "ok": verdict.sha256_match, "sha256_match": verdict.sha256_match,
            "bytes": verdict.bytes_received, "duration_s": round(seconds, 3),
            "goodput_mb_s": round(verdict.bytes_received / seconds / MB, 3) if seconds else None,
            "sha256": verdict.sha256.hex()}


def peer_of(offer: PeerOffer) -> Peer:
    role: Role = "client" if offer.quic_role == "client" else "server"
    return Peer(offer.peer_id, role, offer.peer_fingerprint)
