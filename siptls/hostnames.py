"""Host names and IP literals in the one normal form siptls compares them in.

Pure: imports neither ``twisted`` nor ``OpenSSL``.  Both the certificate
identity matcher (:mod:`siptls.identity`) and the target parser
(:mod:`siptls.target`) use these, so a name read from a certificate and a name
read from a SIP URI end up as the same string when they mean the same domain:
lower case, internationalised labels as IDNA A-labels (``xn--...``), no
trailing dot.
"""

from __future__ import annotations

import ipaddress
import re

import idna

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Letters, digits, hyphen; underscore too, because SRV owner names and some
# private certificates carry it and refusing it would only hide a mismatch
# behind a less helpful message.
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
_MAX_NAME = 253


def normalise_domain(name: str) -> str:
    """Return ``name`` as a lower-case ASCII domain name with A-labels.

    One trailing dot (an absolute name) is dropped.  Raises :class:`ValueError`
    with a full sentence when ``name`` is not a usable domain name: empty
    labels, characters outside letters/digits/hyphen/underscore, labels longer
    than 63 octets, names longer than 253, or IDNA conversion failures.
    """
    if not isinstance(name, str):
        raise ValueError(f"{name!r} is not a text domain name.")
    text = name[:-1] if name.endswith(".") else name
    if not text:
        raise ValueError(f"{name!r} is an empty domain name.")
    if text.isascii():
        text = text.lower()
    else:
        try:
            text = idna.encode(text, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError, ValueError) as exc:
            raise ValueError(
                f"{name!r} is not a valid internationalised domain name: {exc}"
            ) from exc
    if len(text) > _MAX_NAME:
        raise ValueError(f"{name!r} is longer than {_MAX_NAME} characters.")
    for label in text.split("."):
        if not _LABEL.fullmatch(label):
            raise ValueError(
                f"{name!r} is not a valid domain name (bad label {label!r}: labels are 1 to 63 "
                "letters, digits, hyphens or underscores)."
            )
    return text


def parse_ip(text: str) -> IPAddress | None:
    """Return the IP address ``text`` spells, or ``None`` when it is not one.

    IPv6 may be written bare (``2001:db8::1``) or in brackets (``[::1]``).
    """
    if not isinstance(text, str):
        return None
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
