"""The lab's network: an "internet" namespace and two sites, each a NAT router and a host.

    host a (10.0.1.2) -- router a: wan 203.0.113.2 --+
                                                     +-- internet: 192.0.2.1 (rendezvous, STUN)
    host b (10.0.2.2) -- router b: wan 198.51.100.2 -+             192.0.2.2 (stund's other address)

Only documentation (RFC 5737) and private ranges; the internet namespace has no route to the
sites' LANs, so a host is reachable only through what its router's NAT lets in. Each WAN link
is a veth pair with netem when the kernel has it, else a ``lab.delayline`` TUN pair; either way
``delay_ms`` and ``loss`` apply to each direction of each WAN link (so host a to host b crosses
two of them).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field

from lab import nat
from lab.netns import LabError, clean, in_ns, sh

RENDEZVOUS_IP, OTHER_IP = "192.0.2.1", "192.0.2.2"


@dataclass(frozen=True)
class Site:
    name: str  # "a" or "b"
    wan_net: str  # the first three octets of the router's WAN /24
    lan_net: str
    nat: str

    @property
    def wan_ip(self) -> str:
        return f"{self.wan_net}.2"

    @property
    def host_ip(self) -> str:
        return f"{self.lan_net}.2"


@dataclass
class Network:
    """The namespaces and links of one lab; ``build`` makes them, ``destroy`` removes them."""

    nat_a: str = "port-restricted"
    nat_b: str = "port-restricted"
    delay_ms: float = 0.0
    loss: float = 0.0
    run: str = field(default_factory=lambda: f"hpl{os.getpid()}x{secrets.token_hex(3)}")
    delay_mechanism: str = "none"
    delay_lines: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def sites(self) -> tuple[Site, Site]:
        return (Site("a", "203.0.113", "10.0.1", self.nat_a),
                Site("b", "198.51.100", "10.0.2", self.nat_b))

    def ns(self, role: str) -> str:
        """``inet``, ``ra``/``rb`` (routers), ``ha``/``hb`` (hosts)."""
        return f"{self.run}-{role}"

    def build(self) -> None:
        for role in ("inet", "ra", "ha", "rb", "hb"):
            sh("ip", "netns", "add", self.ns(role))
            in_ns(self.ns(role), "ip", "link", "set", "lo", "up")
            in_ns(self.ns(role), "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        inet = self.ns("inet")
        for address in (RENDEZVOUS_IP, OTHER_IP):
            in_ns(inet, "ip", "addr", "add", f"{address}/32", "dev", "lo")
        in_ns(inet, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        impaired = self.delay_ms > 0 or self.loss > 0
        self.delay_mechanism = ("none" if not impaired else
                                "netem" if netem_available(inet) else "delayline")
        for site in self.sites:
            self.build_site(site)

    def build_site(self, site: Site) -> None:
        router, host, inet = self.ns(f"r{site.name}"), self.ns(f"h{site.name}"), self.ns("inet")
        sh("ip", "-n", host, "link", "add", "eth0", "type", "veth", "peer", "name", "lan",
           "netns", router)
        self.wan_link(site, router, inet, f"site_{site.name}")
        for ns, dev, address in ((host, "eth0", f"{site.host_ip}/24"),
                                 (router, "lan", f"{site.lan_net}.1/24"),
                                 (router, "wan", f"{site.wan_ip}/24"),
                                 (inet, f"site_{site.name}", f"{site.wan_net}.1/24")):
            in_ns(ns, "ip", "addr", "add", address, "dev", dev)
            in_ns(ns, "ip", "link", "set", dev, "up")
        in_ns(host, "ip", "route", "add", "default", "via", f"{site.lan_net}.1")
        in_ns(router, "ip", "route", "add", "default", "via", f"{site.wan_net}.1", "dev", "wan")
        in_ns(router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for rule in nat.rules(site.nat, site.host_ip):
            in_ns(router, "iptables", *rule)

    def wan_link(self, site: Site, router: str, inet: str, outer: str) -> None:
        if self.delay_mechanism != "delayline":
            sh("ip", "-n", router, "link", "add", "wan", "type", "veth", "peer", "name", outer,
               "netns", inet)
            if self.delay_mechanism == "netem":
                for ns, dev in ((router, "wan"), (inet, outer)):
                    in_ns(ns, "tc", "qdisc", "add", "dev", dev, "root", *self.netem())
            return
        line = subprocess.Popen(
            [sys.executable, "-m", "lab.delayline", router, "wan", inet, outer,
             "--delay-ms", str(self.delay_ms), "--loss", str(self.loss)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=os.path.dirname(os.path.dirname(__file__)))
        self.delay_lines.append(line)
        assert line.stdout is not None
        if line.stdout.readline().strip() != "READY":
            raise LabError(f"the delay line of site {site.name} did not start")

    def netem(self) -> list[str]:
        return ["netem", "delay", f"{self.delay_ms}ms", "loss", f"{self.loss}%"]

    def conntrack(self, site: str) -> str:
        """The router's conntrack table, for evidence (``conntrack -L`` in its namespace)."""
        return in_ns(self.ns(f"r{site}"), "conntrack", "-L", check=False)

    def destroy(self) -> None:
        for line in self.delay_lines:
            line.terminate()
            try:
                line.wait(5)
            except subprocess.TimeoutExpired:
                line.kill()
                line.wait()
        self.delay_lines.clear()
        clean(self.run)


def netem_available(ns: str) -> bool:
    try:
        in_ns(ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms")
    except LabError:
        return False
    in_ns(ns, "tc", "qdisc", "del", "dev", "lo", "root", check=False)
    return True
