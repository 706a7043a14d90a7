"""Seeded random SET_IP_INFO requests in the forms a host sends (for the checks that
run a stack's own parser over many rendered files)."""

from __future__ import annotations

import ipaddress
import random

from hvguest.wire.kvp import KvpSetIpInfo

GUID = "a3c5e2f0-1111-2222-3333-444455556666"


def random_request(rng: random.Random) -> KvpSetIpInfo:
    def v4() -> str:
        return str(ipaddress.IPv4Address(rng.getrandbits(32)))

    def v6() -> str:
        a = ipaddress.IPv6Address(rng.getrandbits(128))
        return rng.choice([a.compressed, a.exploded, a.compressed.upper()])

    ips = [rng.choice([v4, v6])() for _ in range(rng.randint(0, 4))]
    subnets = []
    for ip in ips:
        if "." in ip:
            plen = rng.randint(1, 32)
            form = rng.choice([str(ipaddress.IPv4Network(f"0.0.0.0/{plen}").netmask), str(plen)])
        else:
            plen = rng.randint(1, 128)
            form = rng.choice([str(plen), f"/{plen}"])
        subnets.append(form)
    # a gateway of a family the addresses have (networkd notes any other one as on-link)
    families = [g for g, dot in ((v4, True), (v6, False)) if any(("." in ip) == dot for ip in ips)]
    gateways = [g() for g in rng.sample(families, rng.randint(0, len(families)))]
    dns = [rng.choice([v4, v6])() for _ in range(rng.randint(0, 4))]
    return KvpSetIpInfo(
        0, "{" + GUID + "}", 3, rng.random() < 0.2,
        ";".join(ips), ";".join(subnets), ";".join(gateways) + ";", "; ".join(dns),
    )
