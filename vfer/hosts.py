"""Which ``Host`` header values a local web endpoint answers: the defence against DNS rebinding.

The node's kiosk and the operators' endpoints (:mod:`vfer.ops_http`: the node's and the
aggregator's /metrics, the fleet page) use the same rule.

A page on ``evil.example`` can make its name resolve to 127.0.0.1 after loading; the browser
then sends the kiosk requests that are same-origin *for evil.example* (``Host: evil.example``,
``Origin: http://evil.example``), so an Origin check alone lets them through. Refusing every
Host that is not one of the kiosk's own names closes that: the attacker controls the name, not
the Host header the browser sends for it.

Entries are names or addresses, optionally with ``:port``; an entry without a port allows any
port (DNS rebinding changes the name, never the port). IPv6 literals are written bracketed in
the Host header (``[::1]:8080``) and may be given bare or bracketed here. Pure functions.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

#: Always answered (unless ``kiosk.allowed_hosts`` lists others): the kiosk's own browser.
LOCAL_NAMES = ("localhost", "127.0.0.1")
#: Bind addresses that mean "every interface": not a name a browser would send.
WILDCARDS = ("", "0.0.0.0", "::")

HostEntry = tuple[str, int | None]


def _name(name: str) -> str:
    name = name.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        return name
    try:
        if ipaddress.ip_address(name).version == 6:
            return f"[{name}]"
    except ValueError:
        pass
    return name


def parse_host(value: str) -> HostEntry | None:
    """``name``, ``name:port``, ``[v6]`` or ``[v6]:port`` to (name, port); None when malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[: end + 1], value[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else None
    elif value.count(":") > 1:  # a bare IPv6 literal (config entries only)
        name, port_text = value, None
    else:
        name, sep, port_text_ = value.partition(":")
        port_text = port_text_ if sep else None
    if not name or any(c.isspace() or c in "/@?#\\" for c in name):
        return None
    if port_text is None:
        return _name(name), None
    if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        return None
    return _name(name), int(port_text)


def allowed_hosts(configured: Iterable[str] | None, bind_host: str) -> frozenset[HostEntry]:
    """The kiosk's allowlist: ``configured`` when given, else the bind address (unless it is a
    wildcard), ``localhost`` and ``127.0.0.1``, each on any port."""
    if configured is not None:
        entries = list(configured)
    else:
        entries = list(LOCAL_NAMES)
        if bind_host.strip() not in WILDCARDS:
            entries.append(bind_host)
    out: set[HostEntry] = set()
    for entry in entries:
        parsed = parse_host(entry)
        if parsed is None:
            raise ValueError(f"allowed_hosts: {entry!r} is not a host name or address")
        out.add(parsed)
    return frozenset(out)


def host_allowed(header: str | None, allowed: frozenset[HostEntry]) -> bool:
    """True when the request's ``Host`` header names the kiosk; a missing one is refused."""
    if header is None:
        return False
    parsed = parse_host(header)
    if parsed is None:
        return False
    name, port = parsed
    return (name, None) in allowed or (port is not None and (name, port) in allowed)
