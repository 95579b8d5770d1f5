"""protocol.tunnel and its parts: two Tunnels paired in memory, a fake clock, no sockets."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messages.errors import AuthError, DecodeError, FrameTooLarge, IllegalTransition, UsageError
from protocol import certs
from protocol.tunnel import auth as tunnel_auth
from protocol.tunnel import frames as tunnel_frames
from protocol.tunnel.chat import MAX_PENDING, MAX_SENDERS, Inbox, Outbox
from protocol.tunnel.connection import Tunnel, TunnelState
from protocol.tunnel.events import (
    TRANSITIONS,
    AuthFailed,
    ChatAcked,
    ChatReceived,
    EchoReplied,
    PingAcked,
    TunnelDown,
    TunnelUp,
    check_transition,
)
from protocol.tunnel.frames import (
    AuthAccepted,
    AuthChallenge,
    AuthProof,
    ChatAck,
    ChatMessage,
    EchoRequest,
    EchoResponse,
    FrameReader,
    decode_body,
    encode_stream_frame,
)
from protocol.tunnel.streams import MAX_HELD_FRAMES, StreamFrames

ADDRESSES = {"client": ("127.0.0.1", 40001), "server": ("127.0.0.1", 40002)}
MAX_STEPS = 5000  # bounds every simulated run; real runs need a few hundred
Drop = Callable[[Tunnel, bytes], bool]


@pytest.fixture(scope="module")
def ids() -> dict[str, tuple[bytes, bytes]]:
    return {name: certs.generate_self_signed(name) for name in ("client", "server", "impostor")}


def fp(identity: tuple[bytes, bytes]) -> str:
    return certs.fingerprint(identity[0])


def pair(ids, now=0.0, *, client_id="client", client_pins="server", server_pins="client",
         **kwargs) -> tuple[Tunnel, Tunnel]:
    """A client and a server built from ``ids``; the client has already called connect()."""
    client_kwargs = {k: v for k, v in kwargs.items() if not k.startswith("server_")}
    server_kwargs = {k[7:]: v for k, v in kwargs.items() if k.startswith("server_")}
    client = Tunnel("client", *ids[client_id], fp(ids[client_pins]), now, **client_kwargs)
    server = Tunnel("server", *ids["server"], fp(ids[server_pins]), now, **server_kwargs)
    client.connect(ADDRESSES["server"], now)
    return client, server


def transfer(a: Tunnel, b: Tunnel, now: float, drop: Drop | None = None) -> None:
    """Deliver datagrams both ways, instantly, until neither side has any left."""
    for _ in range(MAX_STEPS):
        moved = False
        for sender, receiver in ((a, b), (b, a)):
            for data, _ in sender.datagrams_to_send(now):
                moved = True
                if drop is None or not drop(sender, data):
                    receiver.receive_datagram(data, ADDRESSES[sender.role], now)
        if not moved:
            return
    raise AssertionError("transfer did not settle")


def run(a: Tunnel, b: Tunnel, now: float, until: float, drop: Drop | None = None) -> float:
    """Transfer and fire timers, jumping the fake clock from timer to timer, up to ``until``."""
    for _ in range(MAX_STEPS):
        transfer(a, b, now, drop)
        timers = [t for t in (a.get_timer(), b.get_timer()) if t is not None]
        if not timers or min(timers) > until:
            return until
        now = max(now, min(timers))
        for tunnel in (a, b):
            timer = tunnel.get_timer()
            if timer is not None and timer <= now:
                tunnel.handle_timer(now)
    raise AssertionError("run did not settle")


def events(tunnel: Tunnel) -> list:
    return list(iter(tunnel.next_event, None))


def up(ids, **kwargs) -> tuple[Tunnel, Tunnel]:
    client, server = pair(ids, **kwargs)
    run(client, server, 0.0, until=1.0)  # aioquic paces and delays acks: let its timers fire
    assert events(client) == [TunnelUp(fp(ids["server"]))]
    assert events(server) == [TunnelUp(fp(ids["client"]))]
    return client, server


# -- handshake and authentication --------------------------------------------------------------

def test_handshake_with_pinned_fingerprints_brings_both_sides_up(ids):
    client, server = up(ids)
    assert client.state is server.state is TunnelState.UP


def test_client_refuses_a_server_with_another_certificate(ids):
    client, server = pair(ids, client_pins="impostor")
    run(client, server, 0.0, until=5.0)
    client_events, server_events = events(client), events(server)
    assert [type(e) for e in client_events] == [AuthFailed, TunnelDown]
    assert "is not the pinned" in client_events[0].reason
    assert client_events[1].reason.startswith("authentication failed: server certificate")
    assert server_events == [TunnelDown(
        "peer closed the tunnel during the handshake (did it refuse our certificate?)")]
    assert client.state is server.state is TunnelState.DOWN


def test_server_refuses_a_client_with_another_key_and_certificate(ids):
    client, server = pair(ids, client_id="impostor", server_pins="client", client_pins="server")
    run(client, server, 0.0, until=5.0)
    server_events, client_events = events(server), events(client)
    assert [type(e) for e in server_events] == [AuthFailed, TunnelDown]
    assert "client certificate" in server_events[0].reason
    assert [type(e) for e in client_events] == [AuthFailed, TunnelDown]
    assert client_events[0].reason.startswith("the peer refused us: authentication failed")


def test_a_proof_signed_by_another_key_is_refused(ids):
    cid, nonce = b"\x01" * 8, b"\x02" * 32
    good = tunnel_auth.make_proof(AuthChallenge(nonce), cid, fp(ids["server"]), *ids["client"])
    forged = tunnel_auth.make_proof(AuthChallenge(nonce), cid, fp(ids["server"]),
                                    ids["client"][0], ids["impostor"][1])
    tunnel_auth.check_proof(good, nonce, cid, fp(ids["server"]), fp(ids["client"]))
    with pytest.raises(AuthError, match="signature does not match"):
        tunnel_auth.check_proof(forged, nonce, cid, fp(ids["server"]), fp(ids["client"]))


@pytest.mark.parametrize("field", ["nonce", "connection", "server"])
def test_a_proof_is_bound_to_its_nonce_connection_and_server(ids, field):
    cid, nonce, server_fp = b"\x01" * 8, b"\x02" * 32, fp(ids["server"])
    proof = tunnel_auth.make_proof(AuthChallenge(nonce), cid, server_fp, *ids["client"])
    replay = {"nonce": (b"\x03" * 32, cid, server_fp), "connection": (nonce, b"\x09" * 8,
              server_fp), "server": (nonce, cid, fp(ids["impostor"]))}[field]
    with pytest.raises(AuthError):
        tunnel_auth.check_proof(proof, *replay, fp(ids["client"]))


def test_server_ignores_datagrams_that_are_not_an_initial(ids):
    server = Tunnel("server", *ids["server"], fp(ids["client"]), 0.0)
    for junk in (b"", b"hello", b"\xc0" + b"\x00" * 1300, b"\x40" * 1300):
        server.receive_datagram(junk, ADDRESSES["client"], 0.0)
    assert server.state is TunnelState.NEW and server.datagrams_to_send(0.0) == []


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=1500) | st.binary(min_size=1200, max_size=1300).map(
    lambda b: b"\xc0\x00\x00\x00\x01\x08" + b))
def test_hostile_datagrams_never_raise(ids, datagram):
    server = Tunnel("server", *ids["server"], fp(ids["client"]), 0.0)
    server.receive_datagram(datagram, ADDRESSES["client"], 0.0)
    server.datagrams_to_send(0.0)
    assert server.state in (TunnelState.NEW, TunnelState.HANDSHAKE)
    assert events(server) == []


def test_server_gives_up_when_no_client_comes(ids):
    server = Tunnel("server", *ids["server"], fp(ids["client"]), 0.0, setup_timeout=10.0)
    assert server.get_timer() == 10.0
    server.handle_timer(10.0)
    assert events(server) == [TunnelDown("no QUIC connection within 10.0 s")]


def test_setup_times_out_when_the_challenge_is_never_answered(ids):
    client, server = pair(ids)

    def drop_after_handshake(sender: Tunnel, data: bytes) -> bool:
        return sender is client and client.state is TunnelState.AUTHENTICATING

    run(client, server, 0.0, until=12.0, drop=drop_after_handshake)
    server_events = events(server)
    assert server_events == [TunnelDown("tunnel not authenticated within 10.0 s")]
    assert events(client) == [TunnelDown("tunnel not authenticated within 10.0 s")]


def test_garbage_on_a_stream_closes_the_tunnel_as_a_protocol_violation(ids):
    client, server = up(ids)
    server._quic.send_stream_data(3, b"\xff\xff\xff\xff")  # a hostile peer: 4 GiB frame
    run(client, server, 0.0, until=5.0)
    assert events(client) == [TunnelDown(
        "protocol violation: frame of 4294967295 bytes exceeds 65536")]
    assert events(server) == [TunnelDown(
        "peer closed the tunnel: protocol violation: frame of 4294967295 bytes exceeds 65536")]


# -- chat and echo -------------------------------------------------------------------------------

def test_chat_both_ways_arrives_in_order_and_is_acknowledged(ids):
    client, server = up(ids)
    for i in range(5):
        client.send_chat(f"c{i}")
        server.send_chat(f"s{i}")
    run(client, server, 1.0, until=2.0)
    received_by_server = [e for e in events(server) if isinstance(e, ChatReceived)]
    received_by_client = [e for e in events(client) if isinstance(e, ChatReceived)]
    assert received_by_server == [ChatReceived(i + 1, f"c{i}") for i in range(5)]
    assert received_by_client == [ChatReceived(i + 1, f"s{i}") for i in range(5)]
    assert client.outbox.pending == [] and server.outbox.pending == []


def test_echo_comes_back_with_the_round_trip_time(ids):
    client, server = up(ids)
    request_id = client.send_echo(b"ping!")
    # One way takes 25 ms: the request leaves at 1.000, the reply arrives at 1.050.
    for data, _ in client.datagrams_to_send(1.0):
        server.receive_datagram(data, ADDRESSES["client"], 1.025)
    for data, _ in server.datagrams_to_send(1.025):
        client.receive_datagram(data, ADDRESSES["server"], 1.05)
    (reply,) = [e for e in events(client) if isinstance(e, EchoReplied)]
    assert (reply.request_id, reply.payload) == (request_id, b"ping!")
    assert reply.rtt == pytest.approx(0.05)


def test_the_server_can_echo_too(ids):
    client, server = up(ids)
    request_id = server.send_echo(b"from the server")
    run(client, server, 1.0, until=2.0)
    assert events(server) == [EchoReplied(request_id, b"from the server", 0.0)]
    assert events(client) == []


def test_an_echo_that_overtakes_auth_accepted_is_held_then_answered(ids):
    client, server = pair(ids)
    client_state_on_delivery: list[TunnelState] = []

    def lose_auth_accepted(sender: Tunnel, data: bytes) -> bool:
        if sender is not server or server.state is not TunnelState.UP:
            return False
        if not client_state_on_delivery:
            client_state_on_delivery.append(client.state)
            server.send_echo(b"early")  # leaves in the next packet, before the retransmission
            return True
        client_state_on_delivery.append(client.state)
        return False

    run(client, server, 0.0, until=3.0, drop=lose_auth_accepted)
    assert client_state_on_delivery[:2] == [TunnelState.AUTHENTICATING] * 2
    assert events(client) == [TunnelUp(fp(ids["server"]))]
    server_events = events(server)
    assert [type(e) for e in server_events] == [TunnelUp, EchoReplied]
    assert server_events[1].payload == b"early"


def test_echo_needs_an_up_tunnel(ids):
    client, _ = pair(ids)
    with pytest.raises(UsageError, match="echo needs an up tunnel"):
        client.send_echo(b"x")


def test_chat_queued_while_down_is_delivered_once_on_the_next_tunnel(ids):
    outbox, inbox = Outbox(), Inbox()
    first, first_server = pair(ids, outbox=outbox, server_inbox=inbox)
    first.close()
    run(first, first_server, 0.0, until=3.0)
    assert events(first) == [TunnelDown("closed by the user")]
    first.send_chat("typed while down")
    client, server = pair(ids, outbox=outbox, server_inbox=inbox)
    run(client, server, 0.0, until=3.0)
    assert [e for e in events(server) if isinstance(e, ChatReceived)] == [
        ChatReceived(1, "typed while down")]
    assert ChatAcked(1) in events(client) and outbox.pending == []


def test_a_resent_chat_whose_ack_was_lost_is_delivered_once(ids):
    client, server = up(ids)
    client.send_chat("hello")
    # The chat reaches the server, every packet back (its ack among them) is lost,
    # then both workers restart from their saved chat state.
    run(client, server, 1.0, until=1.2, drop=lambda sender, _: sender is server)
    assert events(server) == [ChatReceived(1, "hello")]
    saved_outbox = msgpack.packb(client.outbox.to_plain())
    saved_inbox = msgpack.packb(server.inbox.to_plain())
    outbox = Outbox.from_plain(msgpack.unpackb(saved_outbox))
    inbox = Inbox.from_plain(msgpack.unpackb(saved_inbox))
    assert outbox.pending == [(1, "hello")]

    client, server = pair(ids, outbox=outbox, server_inbox=inbox)
    run(client, server, 0.0, until=1.0)
    assert events(server) == [TunnelUp(fp(ids["client"]))]  # the resend was a duplicate
    assert events(client) == [TunnelUp(fp(ids["server"])), ChatAcked(1)]
    client.send_chat("after restart")
    run(client, server, 1.0, until=2.0)
    assert events(server) == [ChatReceived(2, "after restart")]
    assert events(client) == [ChatAcked(2)]
    assert outbox.pending == []


# -- liveness and closing ------------------------------------------------------------------------

def test_keepalive_pings_keep_a_quiet_tunnel_up(ids):
    client, server = up(ids, ping_interval=10.0, idle_timeout=30.0)
    run(client, server, 1.0, until=105.0)
    client_events = events(client)
    assert [type(e) for e in client_events] == [PingAcked] * 10
    assert [e.uid for e in client_events] == list(range(1, 11))
    assert client.state is server.state is TunnelState.UP


def test_idle_timeout_brings_both_sides_down(ids):
    client, server = up(ids, idle_timeout=30.0, server_idle_timeout=30.0)
    run(client, server, 0.0, until=120.0, drop=lambda sender, data: True)
    for tunnel in (client, server):
        (down,) = events(tunnel)
        assert down.reason.startswith("idle timeout: nothing from the peer for 30.0 s")
        assert tunnel.state is TunnelState.DOWN and tunnel.get_timer() is None


def test_graceful_close_from_either_side(ids):
    for closer in ("client", "server"):
        client, server = up(ids)
        tunnels = {"client": client, "server": server}
        tunnels[closer].close("bye")
        run(client, server, 0.0, until=5.0)
        peer = tunnels["server" if closer == "client" else "client"]
        assert events(tunnels[closer]) == [TunnelDown("bye")]
        assert events(peer) == [TunnelDown("peer closed the tunnel: bye")]
        assert client.get_timer() is None and server.get_timer() is None


def test_close_before_connecting_is_immediately_down(ids):
    server = Tunnel("server", *ids["server"], fp(ids["client"]), 0.0)
    server.close()
    server.close()  # idempotent
    assert events(server) == [TunnelDown("closed by the user")]


# -- the state table -----------------------------------------------------------------------------

ILLEGAL = [(old, new) for old, new in itertools.product(TunnelState, TunnelState)
           if new not in TRANSITIONS[old]]


@pytest.mark.parametrize(("old", "new"), ILLEGAL, ids=[f"{o.value}->{n.value}" for o, n in ILLEGAL])
def test_each_illegal_transition_raises(old, new):
    with pytest.raises(IllegalTransition, match=f"from {old.value} to {new.value}"):
        check_transition(old, new)


def test_connecting_twice_is_an_illegal_transition(ids):
    client, _ = pair(ids)
    with pytest.raises(IllegalTransition):
        client.connect(ADDRESSES["server"], 0.0)


def test_only_the_client_connects(ids):
    server = Tunnel("server", *ids["server"], fp(ids["client"]), 0.0)
    with pytest.raises(UsageError, match="only the client"):
        server.connect(ADDRESSES["client"], 0.0)


# -- stream frames -------------------------------------------------------------------------------

ALL_FRAMES = [
    AuthChallenge(b"n" * 32), AuthProof(b"cert", b"sig"), AuthAccepted(),
    ChatMessage(b"o" * 8, 7, "héllo"), ChatAck(b"o" * 8, 7), EchoRequest(3, b"\x00\xff"),
    EchoResponse(3, b""),
]


def test_chat_frame_golden_bytes():
    frame = encode_stream_frame(ChatMessage(b"\x01" * 8, 2, "hi"))
    assert frame == bytes.fromhex("00000010") + bytes.fromhex("9410c408" + "01" * 8 + "02a26869")


@pytest.mark.parametrize("frame", ALL_FRAMES, ids=lambda f: type(f).__name__)
def test_every_frame_round_trips_through_a_byte_at_a_time_stream(frame):
    reader, decoded = FrameReader(), []
    for byte in encode_stream_frame(frame) * 2:
        decoded += reader.feed(bytes([byte]))
    reader.finish()
    assert decoded == [frame, frame]


def test_frame_reader_refuses_an_oversized_length_before_buffering_it():
    with pytest.raises(FrameTooLarge):
        FrameReader().feed((tunnel_frames.MAX_STREAM_FRAME_BYTES + 1).to_bytes(4, "big"))


def test_stream_ending_inside_a_frame_is_a_decode_error():
    reader = FrameReader()
    reader.feed(encode_stream_frame(ChatAck(b"o" * 8, 1))[:-1])
    with pytest.raises(DecodeError, match="ended inside a frame"):
        reader.finish()


@pytest.mark.parametrize("body", [[16, b"o", -1, "x"], [16, b"o", 1], [99], [16, "o", 1, "x"],
                                  [True, b"", 1, ""], {"tag": 16}])
def test_wrongly_typed_frames_are_decode_errors(body):
    with pytest.raises(DecodeError):
        decode_body(msgpack.packb(body))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.builds(
    lambda tag, rest: msgpack.packb([tag, *rest]), st.integers(0, 20),
    st.lists(st.one_of(st.binary(max_size=40), st.integers(-3, 2**64 - 1), st.text(max_size=10),
                       st.none(), st.booleans()), max_size=4)))
def test_decode_body_gives_a_frame_or_decode_error(body):
    try:
        frame = decode_body(body)
    except DecodeError:
        return
    assert decode_body(encode_stream_frame(frame)[4:]) == frame


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=30), max_size=10))
def test_frame_reader_takes_hostile_chunks(chunks):
    reader = FrameReader()
    try:
        for chunk in chunks:
            reader.feed(chunk)
    except DecodeError:
        pass


def test_held_frames_are_bounded_and_replayed_in_order():
    seen: list[tuple[int, object]] = []
    streams = StreamFrames(lambda sid, frame, now: seen.append((sid, frame)), lambda sid: None)
    for i in range(MAX_HELD_FRAMES):
        streams.hold(3, ChatAck(b"o" * 8, i))
    with pytest.raises(DecodeError):
        streams.hold(3, ChatAck(b"o" * 8, 99))
    streams.release_held(0.0)
    assert [frame.msg_id for _, frame in seen] == list(range(MAX_HELD_FRAMES))


# -- outbox and inbox ----------------------------------------------------------------------------

def test_inbox_dedupes_and_remembers_a_bounded_number_of_senders():
    inbox = Inbox()
    assert [inbox.accept(b"a", i) for i in (1, 2, 2, 1, 3)] == [True, True, False, False, True]
    for n in range(MAX_SENDERS):
        inbox.accept(bytes([n]) * 8, 1)
    assert len(inbox.delivered) == MAX_SENDERS and inbox.high_water(b"a") == 0


def test_outbox_is_bounded():
    outbox = Outbox()
    with pytest.raises(UsageError):
        outbox.add("x" * 20000)
    for _ in range(MAX_PENDING):
        outbox.add("x")
    with pytest.raises(UsageError):
        outbox.add("one too many")


@pytest.mark.parametrize("saved", [
    {"outbox_id": b"o" * 8, "next_id": 3, "pending": {"ab": 1}},
    {"outbox_id": b"o" * 8, "next_id": 3, "pending": [[2, "b"], [1, "a"]]},
    {"outbox_id": b"o" * 8, "next_id": 2, "pending": [[2, "b"]]},
    {"outbox_id": b"o", "next_id": 2, "pending": []},
    {"delivered": [[b"o" * 8, "1"]]},
    [],
])
def test_malformed_saved_chat_state_is_a_decode_error(saved):
    for cls in (Outbox, Inbox):
        with pytest.raises(DecodeError):
            cls.from_plain(saved)


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.integers() | st.binary(max_size=8) | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                        st.sampled_from(["outbox_id", "next_id", "pending", "delivered"]),
                        inner, max_size=4), max_leaves=12))
def test_saved_chat_state_loads_or_is_a_decode_error(data):
    for cls in (Outbox, Inbox):
        try:
            cls.from_plain(data)
        except DecodeError:
            pass
