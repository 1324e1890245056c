"""Listening addresses in Kamailio's ``proto:ip:port`` form; no I/O.

``tls:127.0.0.1:5061``, ``tls:[::1]:5061``, ``127.0.0.1`` (port 5061) and
``tls:0.0.0.0:5061`` are all accepted.  Only TLS is served, so a protocol
other than ``tls`` is refused with an explanation.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from siptls.errors import ConfigError

__all__ = ["DEFAULT_LISTEN", "DEFAULT_TLS_PORT", "ListenAddress", "parse_listen"]

DEFAULT_TLS_PORT = 5061
DEFAULT_LISTEN = "tls:0.0.0.0:5061"


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """One TLS listening socket: an IP literal and a port."""

    host: str
    port: int

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    @property
    def is_wildcard(self) -> bool:
        return self.host in ("0.0.0.0", "::")

    def __str__(self) -> str:
        host = f"[{self.host}]" if self.is_ipv6 else self.host
        return f"tls:{host}:{self.port}"


def parse_listen(text: str) -> ListenAddress:
    """Parse ``[proto:]ip[:port]``; raise :class:`ConfigError` naming the value."""
    value = text.strip()
    scheme, sep, rest = value.partition(":")
    if sep and scheme.lower() in ("tls", "tcp", "udp", "sctp", "ws", "wss"):
        if scheme.lower() != "tls":
            raise ConfigError(
                f"cannot listen on {text!r}: siptls serves SIP over TLS only, use 'tls:'.",
                source="--listen",
            )
        value = rest
    if value.startswith("["):
        host, bracket, tail = value[1:].partition("]")
        if not bracket:
            raise ConfigError(f"the IPv6 address in {text!r} lacks its closing ']'.", "--listen")
        port_text = tail[1:] if tail.startswith(":") else tail
        if tail and not tail.startswith(":"):
            raise ConfigError(f"unexpected {tail!r} after the address in {text!r}.", "--listen")
    elif value.count(":") > 1:
        host, port_text = value, ""
    else:
        host, _, port_text = value.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(
            f"{host!r} in {text!r} is not an IP address (write e.g. tls:127.0.0.1:5061 "
            "or tls:[::1]:5061).",
            source="--listen",
        ) from None
    port = DEFAULT_TLS_PORT
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(f"the port {port_text!r} in {text!r} is not 1-65535.", "--listen")
        port = int(port_text)
    return ListenAddress(address.compressed, port)
