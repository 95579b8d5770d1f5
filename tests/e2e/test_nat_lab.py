"""The NAT lab (``lab/``): two workers behind real Linux NATs in network namespaces, a
rendezvous service on an "internet" between them. For each pair of NAT behaviours (and with
delay and loss on the WAN links): where a direct path exists, the authenticated QUIC tunnel
comes up and chat crosses both ways, over UDP and over QUIC, driven through each worker's UI
WebSocket; where none exists, both workers report a failed hole punch within a bound.

Every lab is built at once when the module starts (one per case, in parallel), watched by a
recorder on each worker's UI from the start, and torn down at the end. Tests that fail today
because of a known bug are ``xfail(strict=True)`` naming it, so they flip when it is fixed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from lab import observe
from lab.lab import Lab
from lab.netns import in_ns, usable
from tests.support.processes import within

pytestmark = [pytest.mark.timeout(300)]

UDP_TRIES = 8  # at 5% loss per link and direction, all eight lost: about 1 in 10^8

REASON = usable()
if REASON is not None:
    pytest.skip(REASON, allow_module_level=True)

START = 90.0  # ~30 worker trees starting at once on two busy cores
TUNNEL = 60.0
FAILURE = 60.0  # the hole punch gives up after 10 s; this bounds the report of it
RETRY = 35 + 10 + 45  # the silence before a retry, its punch deadline, and a margin for load
# Site a's router drops UDP between the sites until both workers report a failed punch; bob's
# punches meanwhile leave an UNREPLIED entry at router a on the tuple alice's punch will need.
BLOCK = ["FORWARD", "-p", "udp", "-d", "198.51.100.2", "-j", "DROP"]
BUG_3 = ("bug 3: pystun3's RFC 3489 test order (change-IP reply before Test I to the other "
         "address) leaves an UNREPLIED conntrack entry that re-maps the next test: "
         "port-restricted MASQUERADE is reported as Symmetric NAT (actors/worker/stun_socket.py)")

@dataclass
class Case:
    name: str
    nat_a: str
    nat_b: str
    delay_ms: float = 0.0
    loss: float = 0.0
    direct: bool = True  # a direct path exists between these NATs
    stund: bool = False
    rendezvous_host: str = "192.0.2.1"
    blocked: bool = False  # starts with BLOCK in site a's router
    matrix: bool = True  # one of the NAT matrix (not a lab for one other check)
    xfail: str = ""
    lab: Lab | None = None
    recorders: dict[str, observe.Recorder] = field(default_factory=dict)
    error: BaseException | None = None


CASES = [
    Case("fc-fc", "full-cone", "full-cone"),
    Case("fc-pr", "full-cone", "port-restricted"),
    Case("fc-sym", "full-cone", "symmetric"),
    Case("pr-pr", "port-restricted", "port-restricted"),
    # No direct path: each side's NAT only lets in the endpoint it sent to, and the symmetric
    # side never sends from the port it was seen on. The stund lab checks NAT types too.
    Case("pr-sym", "port-restricted", "symmetric", direct=False, stund=True),
    Case("sym-sym", "symmetric", "symmetric", direct=False),
    Case("fc-pr-40ms", "full-cone", "port-restricted", delay_ms=40),
    Case("pr-pr-40ms", "port-restricted", "port-restricted", delay_ms=40),
    Case("fc-pr-5pct-loss", "full-cone", "port-restricted", loss=5),
    Case("pr-pr-wildcard-rdv", "port-restricted", "port-restricted", rendezvous_host="0.0.0.0",
         matrix=False),
    Case("pr-pr-blocked", "port-restricted", "port-restricted", blocked=True, matrix=False),
]
BY_NAME = {case.name: case for case in CASES}


def bring_up(case: Case) -> None:
    try:
        case.lab = Lab(case.nat_a, case.nat_b, case.delay_ms, case.loss, stund=case.stund,
                       rendezvous_host=case.rendezvous_host)
        case.lab.up(start_workers=False)
        if case.blocked:
            in_ns(case.lab.ns("ra"), "iptables", "-I", *BLOCK)
        case.lab.start_workers("alice", "bob")
        case.recorders = {n: observe.Recorder(case.lab.host_ns(n)) for n in ("alice", "bob")}
    except Exception as exc:  # reported by the tests of this case
        case.error = exc


def tear_down(case: Case) -> None:
    for recorder in case.recorders.values():
        recorder.close()
    if case.lab is not None:
        case.lab.close()
        if not os.environ.get("LAB_KEEP_LOGS"):  # set it to keep every lab's logs
            case.lab.remove_workdir()


@pytest.fixture(scope="module")
def labs() -> Iterator[dict[str, Case]]:
    with ThreadPoolExecutor(len(CASES)) as pool:
        list(pool.map(bring_up, CASES))
    try:
        yield BY_NAME
    finally:
        with ThreadPoolExecutor(len(CASES)) as pool:
            list(pool.map(tear_down, CASES))


def running(labs: dict[str, Case], name: str) -> Case:
    case = labs[name]
    if case.error is not None:
        raise AssertionError(f"lab {name} did not start: {case.error}")
    return case




def params(cases: list[Case], bug: str = "") -> list[object]:
    return [pytest.param(c.name, id=c.name, marks=[pytest.mark.xfail(strict=True, reason=r)
                                                 for r in [bug or c.xfail] if r])
            for c in cases]


async def udp_chat(sender: observe.Page, receiver: observe.Page, text: str) -> observe.Event:
    """UDP chat is one datagram, never resent (the page marks it failed and its user sends it
    again): on a lossy link a few tries, each with its own text, until one arrives."""
    for attempt in range(UDP_TRIES):
        content = f"{text} #{attempt}"
        await sender.send(type="send_p2p_message", content=content)
        try:
            return await receiver.expect(observe.kind("p2p_message_received", content=content),
                                         within(4 if attempt < UDP_TRIES - 1 else 20),
                                         "udp chat")
        except TimeoutError:
            continue
    raise AssertionError(f"no UDP chat {text!r} arrived in {UDP_TRIES} tries")


async def chat_both_ways(case: Case) -> None:
    assert case.lab is not None
    async with observe.page(case.lab.host_ns("alice")) as alice, \
            observe.page(case.lab.host_ns("bob")) as bob:
        for p in (alice, bob):
            await p.send(type="ui_client_hello")
            await p.expect(observe.tunnel_up, within(TUNNEL), "quic_status_update up")
        kind = observe.kind
        got = await udp_chat(alice, bob, "hello over udp")
        assert got["from_peer_id"] == "alice"
        await bob.send(type="send_quic_message", content="hello over quic")
        got = await alice.expect(kind("quic_message_received", content="hello over quic"),
                                 within(20), "quic chat at alice")
        assert got["from_peer_id"] == "bob"
        await udp_chat(bob, alice, "back over udp")
        await alice.send(type="send_quic_message", content="back over quic")
        await bob.expect(kind("quic_message_received", content="back over quic"), within(20),
                         "quic chat at bob")


@pytest.mark.parametrize("name", params([c for c in CASES if c.direct and c.matrix]))
def test_tunnel_up_and_chat_both_ways(labs: dict[str, Case], name: str) -> None:
    case = running(labs, name)
    for recorder in case.recorders.values():
        # Normally at the first try; on a machine loaded enough to skew the two sides' opening
        # beyond its 500 ms, the retry after 35 s of silence brings it up: direct either way.
        recorder.wait(observe.tunnel_up, within(START + TUNNEL + RETRY), "tunnel up")
    asyncio.run(chat_both_ways(case))


@pytest.mark.parametrize("name", params([c for c in CASES if not c.direct and c.matrix]))
def test_no_direct_path_is_reported_as_a_failed_punch(labs: dict[str, Case], name: str) -> None:
    case = running(labs, name)
    for recorder in case.recorders.values():
        _, event = recorder.wait(observe.punch_failed, within(START + FAILURE),
                                 "failed hole punch")
        assert "no answer from peer endpoint" in event["message"], event
        assert recorder.find(observe.tunnel_up) is None


def test_a_failed_punch_is_retried_until_the_tunnel_is_up(labs: dict[str, Case]) -> None:
    """Both sides fall silent after the failure, so conntrack forgets the UNREPLIED entries
    30 s after the last packet; both punch again and find the path, with every port kept."""
    case = running(labs, "pr-pr-blocked")
    assert case.lab is not None
    failed = [recorder.wait(observe.punch_failed, within(START + FAILURE), "failed hole punch")
              for recorder in case.recorders.values()]
    assert all("punching again in 35 s" in event["message"] for _, event in failed), failed
    in_ns(case.lab.ns("ra"), "iptables", "-D", *BLOCK)
    for recorder in case.recorders.values():
        left = max(at for at, _ in failed) + within(RETRY) - time.monotonic()
        recorder.wait(observe.tunnel_up, max(left, 1), "tunnel up after a retry")
    asyncio.run(chat_both_ways(case))


def nat_type(case: Case, worker: str) -> str:
    _, event = case.recorders[worker].wait(
        lambda e: e.get("type") == "stun_update" and not str(e.get("nat_type")).startswith(
            "unknown (not tested"), within(START + 30), "NAT type")
    return str(event["nat_type"])


def test_nat_type_with_the_embedded_responder_is_unknown(labs: dict[str, Case]) -> None:
    """One address cannot tell NAT types apart (RFC 3489 section 10.1 needs two)."""
    case = running(labs, "fc-pr")
    assert nat_type(case, "alice") == "unknown (server has one address)"


def test_nat_type_of_a_symmetric_nat_with_stund(labs: dict[str, Case]) -> None:
    assert nat_type(running(labs, "pr-sym"), "bob") == "Symmetric NAT"


@pytest.mark.xfail(strict=True, reason=BUG_3)
def test_nat_type_of_a_port_restricted_nat_with_stund(labs: dict[str, Case]) -> None:
    assert nat_type(running(labs, "pr-sym"), "alice") == "Restric Port NAT"  # pystun3's name


def test_stun_works_when_the_rendezvous_binds_one_address(labs: dict[str, Case]) -> None:
    case = running(labs, "fc-fc")
    case.recorders["alice"].wait(lambda e: e.get("type") == "stun_update", within(START),
                                 "stun_update")


def test_stun_works_when_the_rendezvous_binds_the_wildcard(labs: dict[str, Case]) -> None:
    case = running(labs, "pr-pr-wildcard-rdv")
    case.recorders["alice"].wait(lambda e: e.get("type") == "stun_update", within(30),
                                 "stun_update")
