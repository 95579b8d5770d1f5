"""The NAT behaviours of a site router, as iptables rules (RFC 4787 terms).

Every router forwards its LAN out of ``wan``; inbound, it forwards only what conntrack knows
(``ESTABLISHED,RELATED``) unless the behaviour opens more. Linux conntrack filters replies by the
whole 5-tuple, so plain MASQUERADE is address-and-port-dependent filtering.

- ``full-cone``: endpoint-independent mapping and filtering. MASQUERADE keeps the source port
  when the tuple is free, and every UDP datagram to the router's WAN address is sent on to the
  host at the same port (DNAT back), whoever sent it.
- ``port-restricted``: MASQUERADE's default: the source port kept when free (a mapping that in
  practice does not depend on the destination), replies only from the exact remote endpoint.
- ``symmetric``: ``MASQUERADE --random-fully``: a new random port for every new 5-tuple
  (endpoint-dependent mapping), replies only from the exact remote endpoint.
"""

from __future__ import annotations

BEHAVIOURS = ("full-cone", "port-restricted", "symmetric")

FILTER = [
    ["-P", "FORWARD", "DROP"],
    ["-A", "FORWARD", "-i", "lan", "-o", "wan", "-j", "ACCEPT"],
    ["-A", "FORWARD", "-i", "wan", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
     "-j", "ACCEPT"],
]


def rules(behaviour: str, host: str) -> list[list[str]]:
    """``iptables`` argument lists (each after ``iptables``) for a router whose LAN host is
    ``host``."""
    if behaviour not in BEHAVIOURS:
        raise ValueError(f"NAT behaviour must be one of {', '.join(BEHAVIOURS)}: {behaviour!r}")
    masquerade = ["-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"]
    if behaviour == "symmetric":
        return [*FILTER, [*masquerade, "--random-fully"]]
    if behaviour == "port-restricted":
        return [*FILTER, masquerade]
    return [*FILTER, masquerade,
            ["-t", "nat", "-A", "PREROUTING", "-i", "wan", "-p", "udp", "-j", "DNAT",
             "--to-destination", host],
            ["-A", "FORWARD", "-i", "wan", "-o", "lan", "-p", "udp", "-d", host, "-j", "ACCEPT"]]
