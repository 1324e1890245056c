"""Parse where a SIP-over-TLS message should go into a :class:`Target`.

Pure: imports neither ``twisted`` nor ``OpenSSL``.  :mod:`siptls.resolve`
turns a Target into addresses with DNS.

Accepted spellings:

* ``sips:[user@]host[:port][;params][?headers]``;
* ``sip:[user@]host[:port];transport=tls[...]`` (a ``sip:`` URI without
  ``transport=tls`` is refused: siptls only speaks TLS);
* ``host``, ``host:port``, ``[v6]``, ``[v6]:port``, or a bare IPv6 address.

RFC 3261 grammar used here (§25.1)::

    SIP-URI  = "sip:" [ userinfo ] hostport uri-parameters [ headers ]
    SIPS-URI = "sips:" [ userinfo ] hostport uri-parameters [ headers ]
    userinfo = ( user / telephone-subscriber ) [ ":" password ] "@"
    hostport = host [ ":" port ]
    host     = hostname / IPv4address / IPv6reference

``user`` may contain ``;`` and ``?`` but parameters and headers never contain
``@``, so the host starts after the last ``@``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from siptls.errors import ResolutionError
from siptls.hostnames import normalise_domain, parse_ip

__all__ = ["DEFAULT_PORT", "Target", "parse_target"]

DEFAULT_PORT = 5061
"""The SIP-over-TLS port used for IP literals and for A/AAAA fallback (RFC 3261 §19.1.2)."""

_PORT = re.compile(r"[0-9]{1,5}")
_SCHEME = re.compile(r"(sips?):", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed SIP-over-TLS destination.

    ``host`` is a normalised domain name (lower case, A-labels) or the
    compressed text of an IP address (no brackets); ``port`` is ``None`` when
    none was given, which lets :mod:`siptls.resolve` use SRV records;
    ``server_name`` is the SIP domain to check the peer certificate against
    and to send as SNI: the host as written, never an SRV target; ``None`` for
    an IP literal.
    """

    host: str
    port: int | None
    is_ip: bool
    server_name: str | None


def _port(text: str, original: str) -> int:
    if not _PORT.fullmatch(text) or not 0 < int(text) < 65536:
        raise ResolutionError(
            f"{original!r} has port {text!r}, which is not a number from 1 to 65535.",
            name=original,
        )
    return int(text)


def _hostport(text: str, original: str) -> Target:
    port: int | None = None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ResolutionError(f"{original!r} has an unclosed '[' in its host.", name=original)
        host, after = text[1:close], text[close + 1 :]
        if after:
            if not after.startswith(":"):
                raise ResolutionError(
                    f"{original!r} has {after!r} after its IPv6 host, where only ':port' may be.",
                    name=original,
                )
            port = _port(after[1:], original)
        address = parse_ip(host)
        if address is None or address.version != 6:
            raise ResolutionError(
                f"{original!r} has {host!r} in brackets, which is not an IPv6 address.",
                name=original,
            )
        return Target(host=str(address), port=port, is_ip=True, server_name=None)

    if text.count(":") > 1:
        # A bare IPv6 address: it cannot carry a port without brackets.
        address = parse_ip(text)
        if address is None:
            raise ResolutionError(
                f"{original!r} is neither host[:port] nor an IPv6 address "
                "(write IPv6 with a port as [address]:port).",
                name=original,
            )
        return Target(host=str(address), port=None, is_ip=True, server_name=None)

    host, colon, port_text = text.partition(":")
    if colon:
        port = _port(port_text, original)
    address = parse_ip(host)
    if address is not None:
        return Target(host=str(address), port=port, is_ip=True, server_name=None)
    try:
        name = normalise_domain(host)
    except ValueError as exc:
        raise ResolutionError(
            f"{original!r} does not name a valid host: {exc}", name=original
        ) from exc
    return Target(host=name, port=port, is_ip=False, server_name=name)


def _uri_params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in text.split(";"):
        if item:
            key, _, value = item.partition("=")
            params[key.lower()] = value
    return params


def parse_target(text: str) -> Target:
    """Parse a SIPS/SIP URI or a ``host[:port]`` string into a :class:`Target`.

    Raises :class:`~siptls.errors.ResolutionError` (with ``name`` set to
    ``text``) when ``text`` is not a TLS destination we can reach: empty, a
    ``sip:`` URI without ``;transport=tls``, a transport other than TLS, a bad
    port, or a host that is not a domain name or IP address.
    """
    if not isinstance(text, str):
        raise ResolutionError(f"{text!r} is not a text SIP target.")
    if not text or text != text.strip():
        raise ResolutionError(f"{text!r} is not a SIP target (empty or padded).", name=text)

    scheme_match = _SCHEME.match(text)
    if scheme_match is None:
        return _hostport(text, text)

    scheme = scheme_match.group(1).lower()
    rest = text[scheme_match.end() :]
    # Headers may contain '?' only after the host, and nothing after the host
    # contains '@', so: strip userinfo first, then headers, then params.
    hostpart = rest.rsplit("@", 1)[-1]
    hostpart = hostpart.split("?", 1)[0]
    hostport, _, param_text = hostpart.partition(";")
    params = _uri_params(param_text)
    transport = params.get("transport", "").lower()
    if scheme == "sip" and transport != "tls":
        raise ResolutionError(
            f"{text!r} is a sip: URI without ;transport=tls; siptls only sends over TLS "
            "(use a sips: URI or add ;transport=tls).",
            name=text,
        )
    if scheme == "sips" and transport not in ("", "tls", "tcp"):
        raise ResolutionError(
            f"{text!r} asks for transport {transport!r}, which a sips: URI cannot use.",
            name=text,
        )
    if not hostport:
        raise ResolutionError(f"{text!r} has no host.", name=text)
    return _hostport(hostport, text)
