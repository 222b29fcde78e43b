"""Network addresses as policy sees them: which peers are on this machine.

Shared by the line service (``login`` in clear is allowed from loopback) and the SMTP
submission (AUTH in clear is allowed to a loopback server).
"""

from __future__ import annotations

import ipaddress

__all__ = ["is_local", "is_loopback"]

def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 (also as ``::ffff:127.x.y.z``, how a dual-stack listener sees an IPv4
    client) and ``localhost``: traffic that never leaves the machine."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def is_local(host: str) -> bool:
    """Loopback or a UNIX socket: the password does not cross a network."""
    return host == "unix" or is_loopback(host)
