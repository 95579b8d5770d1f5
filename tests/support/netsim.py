"""An in-memory UDP network with NATs, for driving sans-I/O cores in tests (test support only).

Nothing here touches a socket: addresses are plain tuples (RFC 5737 documentation ranges), and a
datagram is a tuple in a list until ``run`` hands it to the core bound to its destination. NATs
follow the RFC 4787 vocabulary:

    FULL_CONE        endpoint-independent mapping (EIM) and filtering (EIF)
    PORT_RESTRICTED  EIM, address-and-port-dependent filtering (APDF)
    SYMMETRIC        address-and-port-dependent mapping (APDM) and APDF
    CONNTRACK        Linux MASQUERADE: a mapping per flow that keeps the private port, unless an
                     inbound flow nobody answered already holds that tuple; then another port

An ``OpeningPunch`` (protocol/udp/holepunch.py) dies right after its sender's NAT, as the small
TTL it is sent with makes it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from protocol.stun import Address
from protocol.udp.holepunch import OpeningPunch

STUN_SERVER: Address = ("192.0.2.1", 3478)


class NatKind(enum.Enum):
    FULL_CONE = "full cone"
    PORT_RESTRICTED = "port-restricted cone"
    SYMMETRIC = "symmetric"
    CONNTRACK = "linux conntrack"


class Nat:
    """One NAT box: maps private endpoints to ports of ``public_ip`` and filters what comes in."""

    def __init__(self, public_ip: str, kind: NatKind, first_port: int = 40000) -> None:
        self.public_ip, self.kind = public_ip, kind
        self._next_port = first_port
        self._port_of: dict[tuple[Address, Address | None], int] = {}
        self._internal_of: dict[int, Address] = {}
        self._contacted: dict[int, set[Address]] = {}  # per public port, the remotes it sent to
        self._unreplied: set[tuple[int, Address]] = set()  # CONNTRACK: inbound flows held

    def outbound(self, src: Address, dst: Address) -> Address:
        """The public source of a datagram from ``src`` to ``dst`` (RFC 4787 section 4.1)."""
        per_flow = self.kind in (NatKind.SYMMETRIC, NatKind.CONNTRACK)
        key = (src, dst if per_flow else None)
        if key not in self._port_of:
            kept = self.kind is NatKind.CONNTRACK and (src[1], dst) not in self._unreplied
            self._port_of[key] = src[1] if kept else self._next_port
            self._next_port += 0 if kept else 7
        port = self._port_of[key]
        self._internal_of.setdefault(port, src)
        self._contacted.setdefault(port, set()).add(dst)
        return (self.public_ip, port)

    def inbound(self, src: Address, public_port: int) -> Address | None:
        """The private destination of a datagram from ``src``, or None if filtered (4.3)."""
        internal = self._internal_of.get(public_port)
        if internal is None:
            self._unreplied.add((public_port, src))
            return None
        if self.kind is NatKind.FULL_CONE or src in self._contacted[public_port]:
            return internal
        self._unreplied.add((public_port, src))
        return None


@dataclass
class InFlight:
    deliver_at: float
    src: Address  # as seen on the wire: after the sender's NAT
    dst: Address
    data: bytes


@dataclass
class Network:
    """Hosts on private addresses, each optionally behind a NAT, joined by a lossless link."""

    latency: float = 0.01
    up: bool = True  # False drops every datagram: a link cut for liveness tests
    nat_of: dict[Address, Nat | None] = field(default_factory=dict)
    in_flight: list[InFlight] = field(default_factory=list)
    dropped: list[InFlight] = field(default_factory=list)  # filtered, unroutable or cut
    sent: int = 0

    def add_host(self, addr: Address, nat: Nat | None = None) -> Address:
        self.nat_of[addr] = nat
        return addr

    def stun_mapping(self, host: Address) -> Address:
        """What a STUN server would report to ``host`` (the binding its request created)."""
        nat = self.nat_of[host]
        return nat.outbound(host, STUN_SERVER) if nat else host

    def send(self, src: Address, dst: Address, data: bytes, now: float) -> None:
        nat = self.nat_of[src]
        wire_src = nat.outbound(src, dst) if nat else src
        flight = InFlight(now + self.latency, wire_src, dst, data)
        if isinstance(data, OpeningPunch) and nat is not None:
            self.dropped.append(flight)  # its TTL runs out beyond our NAT
        else:
            self.in_flight.append(flight)
        self.sent += 1

    def next_delivery(self) -> float | None:
        return min((d.deliver_at for d in self.in_flight), default=None)

    def due(self, now: float) -> list[tuple[Address, InFlight]]:
        """Datagrams that arrive by ``now``, each with the private host it reaches."""
        arriving = [d for d in self.in_flight if d.deliver_at <= now]
        self.in_flight = [d for d in self.in_flight if d.deliver_at > now]
        routed = [(self._route(d), d) for d in arriving]
        self.dropped += [d for host, d in routed if host is None]
        return [(host, d) for host, d in routed if host is not None]

    def _route(self, datagram: InFlight) -> Address | None:
        if not self.up:
            return None
        if datagram.dst in self.nat_of and self.nat_of[datagram.dst] is None:
            return datagram.dst
        for nat in self.nat_of.values():
            if nat is not None and nat.public_ip == datagram.dst[0]:
                return nat.inbound(datagram.src, datagram.dst[1])
        return None


class Core(Protocol):
    """The aioquic-style surface every sans-I/O core in protocol/ offers."""

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None: ...
    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...


def run(network: Network, cores: dict[Address, Core], now: float, until: float,
        max_steps: int = 100_000) -> float:
    """Drives ``cores`` (keyed by private host address) from ``now`` until nothing is due before
    ``until``; returns the time it stopped at. Time jumps from event to event: no sleeping."""
    for _ in range(max_steps):
        for host, core in cores.items():
            timer = core.get_timer()
            if timer is not None and timer <= now:
                core.handle_timer(now)
            for data, dst in core.datagrams_to_send(now):
                network.send(host, dst, data, now)
        arrived = network.due(now)
        for host, datagram in arrived:
            if host in cores:
                cores[host].receive_datagram(datagram.data, datagram.src, now)
        if arrived:
            continue
        upcoming = [t for t in [network.next_delivery(), *(c.get_timer() for c in cores.values())]
                    if t is not None]
        if not upcoming or min(upcoming) > until:
            return now
        now = max(now, min(upcoming))
    raise AssertionError(f"network still busy after {max_steps} steps at t={now}")
