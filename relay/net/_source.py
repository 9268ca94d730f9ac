"""What limits count as one source: an IPv4 address, or an IPv6 /64 network."""

from __future__ import annotations

import ipaddress


def source_of(address: str) -> str:
    """The source key of a peer *address*, for per-source limits and logs.

    One host on IPv6 usually holds a whole /64 (2**64 addresses), so counting
    per address would let it sidestep every per-IP limit; IPv6 peers are
    counted per /64 (as the IPv4-mapped form, a v4 peer is its v4 address).
    Anything that is not an IP address (a Unix socket) is kept, cut to 64
    characters.
    """
    if ":" not in address:  # IPv4 as the kernel writes it (or not an IP): as it is
        return address[:64]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)
