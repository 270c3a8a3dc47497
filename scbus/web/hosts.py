"""
The Host a request names must be one of this bus's: the defence against DNS rebinding.

Any web page the operator opens can make the browser send requests to this port, on
127.0.0.1 too, under a name its author controls: attacker.example is resolved to the
attacker's server for the page, then to 127.0.0.1. The browser takes the bus's answers
(set-aside bodies, tracebacks, log lines) for the attacker's origin and lets the page
read them. The Host header gives it away: it names the attacker's domain. So only these
are answered:

- an IP address (any: the page's origin is then that address, which serves the bus
  itself, and an address cannot be rebound), so health checks and scrapes by pod IP work;
- ``localhost`` (browsers resolve it to loopback themselves, never through DNS);
- the names in ``http.allowed_hosts`` (``.example.org`` covers its subdomains too);
- no Host at all (no browser sends a request without one).

The port is not checked: an SSH tunnel, ``kubectl port-forward`` or ``docker -p`` changes
it, and a name that cannot be rebound is safe on any port.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from ..config import is_ip_address

__all__ = ["HostCheck", "host_name", "LOOPBACK_NAMES"]

#: Names every browser resolves to loopback by itself.
LOOPBACK_NAMES = ("localhost",)
#: A port after the name or address: digits, as RFC 3986 has it (empty too).
_PORT = re.compile(r"(?::[0-9]{0,5})?")
#: Distinct refused hosts whose first refusal is logged (a misconfigured check repeats).
LOGGED = 100


def host_name(header: bytes) -> str | None:
    """The name or address of a Host header, lower case, without port or final dot; None if malformed."""
    try:
        text = header.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    if text.startswith("["):
        end = text.find("]")
        host, port = text[1:end], text[end + 1:]
        if end < 0 or not is_ip_address(host) or ":" not in host:
            return None
    else:
        host, colon, port = text.partition(":")
        port = colon + port
    if not host or not _PORT.fullmatch(port) or any(c in host for c in "/\\@?#% "):
        return None
    host = host.lower()
    return host[:-1] if host.endswith(".") and len(host) > 1 else host


class HostCheck:
    """Which Host headers are answered; C{allowed} are the extra names (checked by the config)."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        names = [name.lower().rstrip(".") for name in allowed]
        self.names = frozenset((*LOOPBACK_NAMES, *(n for n in names if not n.startswith("."))))
        self.domains = tuple(n for n in names if n.startswith("."))
        self.logged: set[str] = set()

    def allows(self, host: str) -> bool:
        if is_ip_address(host) or host in self.names:
            return True
        return any(host.endswith(domain) or host == domain[1:] for domain in self.domains)

    def refusal(self, headers: Sequence[bytes] | None) -> tuple[int, str] | None:
        """None to answer the request, else its status and why (C{headers}: its Host values)."""
        if not headers:
            return None
        if len(headers) > 1:
            return 400, "more than one Host header"
        shown = headers[0].decode("ascii", "replace")[:100]
        host = host_name(headers[0])
        if host is None:
            return 400, f"the Host header {shown!r} is not a host name or address with an optional port"
        if self.allows(host):
            return None
        return 421, (
            f"Host {shown!r} is not a name of this bus: it answers IP addresses, "
            f"{', '.join(LOOPBACK_NAMES)} and the names in http.allowed_hosts"
        )

    def first_refusal(self, host: bytes) -> bool:
        """Whether C{host} was refused for the first time (to log it once)."""
        key = host.decode("ascii", "replace")[:100]
        if key in self.logged or len(self.logged) >= LOGGED:
            return False
        self.logged.add(key)
        return True
