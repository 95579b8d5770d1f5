"""The authenticated QUIC tunnel between two paired workers, sans-I/O, over aioquic.

``Tunnel`` wraps one ``aioquic.quic.connection.QuicConnection`` and keeps its API: the owner feeds
``receive_datagram(data, addr, now)``, sends ``datagrams_to_send(now)``, re-arms one timer from
``get_timer()``, calls ``handle_timer(now)`` and drains ``next_event()``. It owns no socket and no
clock. Setup: the QUIC/TLS handshake (the client pins the server's certificate), then the
challenge of ``auth`` on the server's first bidirectional stream (the *control stream*);
only after both checks does either side report ``TunnelUp``. Then ``tunnel_app`` carries chat
and echo, and a PING every ``ping_interval`` keeps the tunnel and the NAT mapping alive.

One ``Tunnel`` is one connection: after ``TunnelDown`` the owner makes a new one, handing it the
same ``Outbox`` and ``Inbox`` so that chats are delivered exactly once across tunnels.
"""

from __future__ import annotations

import logging
from collections import deque

from aioquic.quic import events as quic_events
from aioquic.quic.connection import NetworkAddress, QuicConnection

from messages.errors import AuthError, ConfigError, DecodeError, UsageError
from protocol.certs import check_key_pair, fingerprint
from protocol.tunnel import auth
from protocol.tunnel.app import AppStreams
from protocol.tunnel.bench import BenchStreams
from protocol.tunnel.chat import Inbox, Outbox
from protocol.tunnel.events import (
    AuthFailed,
    TunnelDown,
    TunnelEvent,
    TunnelState,
    TunnelUp,
    check_transition,
)
from protocol.tunnel.frames import AuthAccepted, AuthChallenge, AuthProof, Frame
from protocol.tunnel.quic import (
    Keepalive,
    TunnelError,
    describe_termination,
    initial_destination_cid,
    quic_configuration,
)
from protocol.tunnel.streams import StreamFrames

logger = logging.getLogger(__name__)

SETTING_UP = (TunnelState.HANDSHAKE, TunnelState.AUTHENTICATING)
AUTH_FRAMES = (AuthChallenge, AuthProof, AuthAccepted)


class Tunnel:
    """One QUIC connection to the paired worker, pinned at both ends."""

    def __init__(
        self, role: str, local_cert_pem: bytes, local_key_pem: bytes, peer_fingerprint: str,
        now: float, *, idle_timeout: float = 30.0, ping_interval: float = 10.0,
        setup_timeout: float = 10.0, outbox: Outbox | None = None, inbox: Inbox | None = None,
    ) -> None:
        if role not in ("client", "server"):
            raise ConfigError(f"a tunnel role is 'client' or 'server', not {role!r}")
        check_key_pair(local_cert_pem, local_key_pem)
        self.role = role
        self.peer_fingerprint = auth.parse_fingerprint(peer_fingerprint)
        self.local_fingerprint = fingerprint(local_cert_pem)
        self.outbox = outbox if outbox is not None else Outbox()
        self.inbox = inbox if inbox is not None else Inbox()
        self._cert_pem, self._key_pem = local_cert_pem, local_key_pem
        self._config = quic_configuration(role == "client", local_cert_pem, local_key_pem,
                                          idle_timeout)
        self._keepalive = Keepalive(ping_interval)
        self._setup_timeout = setup_timeout
        self._setup_deadline = now + setup_timeout  # UP by then, or give up
        self._state = TunnelState.NEW
        self._quic: QuicConnection | None = None
        self._control: auth.ControlStream | None = None
        self._streams = StreamFrames(self._on_frame, self._on_stream_end)
        self._app: AppStreams | None = None
        self._bench: BenchStreams | None = None
        self._events: deque[TunnelEvent] = deque()

    @property
    def state(self) -> TunnelState:
        return self._state

    # -- the aioquic-style API ---------------------------------------------------------------

    def connect(self, addr: NetworkAddress, now: float) -> None:
        """Client only: start the handshake towards the peer's (punched) address."""
        if self.role != "client":
            raise UsageError("only the client role connects; the server waits for an Initial")
        self._move_to(TunnelState.HANDSHAKE)
        self._open(QuicConnection(configuration=self._config)).connect(addr, now)

    def receive_datagram(self, data: bytes, addr: NetworkAddress, now: float) -> None:
        quic = self._quic if self._quic is not None else self._accept_initial(data)
        if quic is not None:
            quic.receive_datagram(data, addr, now)
            self._drain(quic, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, NetworkAddress]]:
        if self._quic is None:
            return []
        if self._app is not None:
            self._app.stamp_sent(now)
        return self._quic.datagrams_to_send(now)

    def get_timer(self) -> float | None:
        quic_timer = self._quic.get_timer() if self._quic is not None else None
        timers = [quic_timer, self._keepalive.next_at]
        if self._state is TunnelState.NEW or self._state in SETTING_UP:
            timers.append(self._setup_deadline)
        return min((t for t in timers if t is not None), default=None)

    def handle_timer(self, now: float) -> None:
        if now >= self._setup_deadline:
            self._give_up_setup()
        if self._quic is not None:
            self._keepalive.ping_if_due(self._quic, now)
            quic_timer = self._quic.get_timer()
            if quic_timer is not None and now >= quic_timer:
                self._quic.handle_timer(now)
            self._drain(self._quic, now)

    def next_event(self) -> TunnelEvent | None:
        return self._events.popleft() if self._events else None

    def send_chat(self, text: str) -> int:
        """Queue a chat in the outbox (even while down); returns its id."""
        msg_id = self.outbox.add(text)
        if self._app is not None and self._state is TunnelState.UP:
            self._app.flush_chats()
        return msg_id

    def send_echo(self, payload: bytes) -> int:
        """Ask the peer to send ``payload`` back; ``EchoReplied`` carries the RTT."""
        if self._app is None or self._state is not TunnelState.UP:
            raise UsageError(f"echo needs an up tunnel; this one is {self._state.value}")
        return self._app.send_echo(payload)

    def bench_write(self, session_id: int, data: bytes, end: bool, now: float) -> None:
        """The next bytes of a benchmark run's stream (``protocol.tunnel.bench``)."""
        if self._bench is None or self._state is not TunnelState.UP:
            raise UsageError(f"a benchmark needs an up tunnel; this one is {self._state.value}")
        self._bench.write(session_id, data, end, now)

    def bench_unsent(self, session_id: int) -> int | None:
        return None if self._bench is None else self._bench.unsent(session_id)

    def bench_cancel(self, session_id: int) -> None:
        if self._bench is not None:
            self._bench.cancel(session_id)

    def abandon(self, reason: str) -> None:
        """The owner drops this connection for a new one: its benchmark runs end now."""
        if self._bench is not None:
            self._bench.abort(f"the QUIC tunnel was replaced: {reason}")
            self._bench = None

    def close(self, reason: str = "closed by the user") -> None:
        """Graceful close: CONNECTION_CLOSE to the peer, ``TunnelDown`` after the closing period."""
        if self._state is TunnelState.NEW:
            self._go_down(reason)
        elif self._state not in (TunnelState.CLOSING, TunnelState.DOWN):
            self._abort(TunnelError.NO_ERROR, reason)

    # -- transitions -------------------------------------------------------------------------

    def _move_to(self, new: TunnelState) -> None:
        """The one place the state changes."""
        check_transition(self._state, new)
        logger.info("tunnel (%s) %s -> %s", self.role, self._state.value, new.value)
        self._state = new

    def _open(self, quic: QuicConnection) -> QuicConnection:
        self._quic = quic
        self._control = auth.ControlStream(
            quic, self._cert_pem, self._key_pem, self.local_fingerprint, self.peer_fingerprint
        )
        return quic

    def _accept_initial(self, data: bytes) -> QuicConnection | None:
        """Server: a first datagram opens the connection only if it is a client's Initial."""
        if self.role != "server" or self._state is not TunnelState.NEW:
            return None
        cid = initial_destination_cid(data, self._config)
        if cid is None:
            return None
        self._move_to(TunnelState.HANDSHAKE)
        return self._open(
            QuicConnection(configuration=self._config, original_destination_connection_id=cid)
        )

    def _drain(self, quic: QuicConnection, now: float) -> None:
        while (event := quic.next_event()) is not None:
            if isinstance(event, quic_events.HandshakeCompleted):
                self._on_handshake_completed()
            elif isinstance(event, quic_events.ConnectionTerminated):
                self._on_terminated(event)
            elif isinstance(event, quic_events.PingAcknowledged):
                self._events.append(self._keepalive.acked(event.uid, now))
            elif self._state in SETTING_UP or self._state is TunnelState.UP:
                self._on_stream_event(event, now)

    def _on_stream_event(self, event: quic_events.QuicEvent, now: float) -> None:
        try:
            if self._bench is not None and self._bench.claims(event):
                self._bench.on_event(event, now)
            else:
                self._streams.on_event(event, now)
        except AuthError as exc:
            self._fail_auth(exc.reason)
        except DecodeError as exc:
            self._abort(TunnelError.PROTOCOL_VIOLATION, f"protocol violation: {exc.reason}")

    def _on_handshake_completed(self) -> None:
        if self._state is not TunnelState.HANDSHAKE:
            return
        if self.role == "client":
            try:
                auth.check_server_certificate(self._quic, self.peer_fingerprint)  # type: ignore[arg-type]
            except AuthError as exc:
                self._fail_auth(exc.reason)
                return
        self._move_to(TunnelState.AUTHENTICATING)
        if self.role == "server":
            self._control.send_challenge()  # type: ignore[union-attr]

    def _on_frame(self, stream_id: int, frame: Frame, now: float) -> None:
        """Each frame, in arrival order; raises DecodeError or AuthError on a bad one."""
        if isinstance(frame, AUTH_FRAMES):
            if self._state is not TunnelState.AUTHENTICATING:
                raise DecodeError(f"{type(frame).__name__} while {self._state.value}")
            if self._control.on_frame(stream_id, frame):  # type: ignore[union-attr]
                self._go_up(now)
        elif self._app is not None:
            self._app.on_frame(stream_id, frame, now)
        elif self.role == "client" and self._state is TunnelState.AUTHENTICATING:
            self._streams.hold(stream_id, frame)  # the server is up before we know it
        else:
            raise DecodeError(f"{type(frame).__name__} before the tunnel is up")

    def _on_stream_end(self, stream_id: int) -> None:
        if self._app is not None:
            self._app.stream_ended(stream_id)

    def _go_up(self, now: float) -> None:
        self._move_to(TunnelState.UP)
        self._app = AppStreams(self._quic, self.outbox, self.inbox, self._events.append)  # type: ignore[arg-type]
        self._bench = BenchStreams(self._quic, self._events.append)  # type: ignore[arg-type]
        self._keepalive.start(now)
        self._events.append(TunnelUp(self.peer_fingerprint))
        self._app.flush_chats()
        self._streams.release_held(now)

    def _give_up_setup(self) -> None:
        if self._state is TunnelState.NEW:
            self._go_down(f"no QUIC connection within {self._setup_timeout} s")
        elif self._state in SETTING_UP:
            reason = f"tunnel not authenticated within {self._setup_timeout} s"
            self._abort(TunnelError.SETUP_TIMEOUT, reason)

    def _fail_auth(self, reason: str) -> None:
        self._events.append(AuthFailed(reason))
        self._abort(TunnelError.AUTH_FAILED, f"authentication failed: {reason}")

    def _abort(self, code: TunnelError, reason: str) -> None:
        self._quic.close(error_code=code, reason_phrase=reason)  # type: ignore[union-attr]
        self._move_to(TunnelState.CLOSING)
        self._keepalive.stop()

    def _on_terminated(self, event: quic_events.ConnectionTerminated) -> None:
        refused = event.frame_type is None and event.error_code == TunnelError.AUTH_FAILED
        if refused and self._state in SETTING_UP:
            self._events.append(AuthFailed(f"the peer refused us: {event.reason_phrase}"))
        if self._state is TunnelState.CLOSING:
            self._go_down(event.reason_phrase)  # ours, from close() or _abort()
        else:
            self._go_down(describe_termination(event, self._config.idle_timeout))

    def _go_down(self, reason: str) -> None:
        self._move_to(TunnelState.DOWN)
        self._app = None
        if self._bench is not None:
            self._bench.abort(f"the QUIC tunnel went down: {reason}")
            self._bench = None
        self._keepalive.stop()
        self._events.append(TunnelDown(reason))


__all__ = ["Tunnel", "TunnelError", "TunnelState"]
