"""Loopback-only addresses: kdiag never opens the gdbstub or QMP to other machines."""

from __future__ import annotations

import ipaddress


def loopback_host(host: str) -> str | None:
    """``host`` as a loopback address (``localhost`` becomes 127.0.0.1), or None when it is
    not one: any other name or address, or not an address at all."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        return host if ipaddress.ip_address(host).is_loopback else None
    except ValueError:
        return None
