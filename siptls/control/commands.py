"""AMP commands of the siptls control channel, shared by the server and ``siptls-ctl``.

Each command carries the name of the Kamailio RPC it stands for (``tls.info``,
``tls.list``, ``tls.options``, ``tls.kill``, ``tls.reload``) as its AMP
command name.

AMP limits every value in a box to 65,535 bytes, and a list argument
(`amp.AmpList`) is serialised into *one* value.  So the commands that return
lists (`TLSList`, `TLSOptions`) page: the server fills a page until its
encoded size reaches `PAGE_BYTES`, measured with the same encoder that will
send it (`fit_page`), and tells the client where to continue.  Text fields are
cut to `TEXT_LIMIT` characters first, so that one entry always fits a page.

Errors travel as the exception classes of `siptls.errors` (declared in each
command's ``errors``); the client gets an instance whose ``str()`` is the
server's message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from twisted.protocols import amp

from siptls.errors import ConfigError, ControlError, UnknownConnectionError

__all__ = [
    "CONNECTION_ENTRY",
    "DOMAIN_ENTRY",
    "EncodedAmpList",
    "MAX_LIST_LIMIT",
    "NAME_VALUE_LIST",
    "PAGE_BYTES",
    "TEXT_LIMIT",
    "TLSInfo",
    "TLSKill",
    "TLSList",
    "TLSOptions",
    "TLSReload",
    "clip",
    "fit_page",
]

#: Budget for the encoded size of one list value; AMP's hard limit is 65,535.
PAGE_BYTES = 60_000
#: Longest text sent in one field of a list entry, in characters.
TEXT_LIMIT = 1_000
#: Most connections the server returns in one `TLSList` page.
MAX_LIST_LIMIT = 1_000

# Subclasses before their bases: the server maps a raised error to the first
# class in this order that it is an instance of.
_ERRORS: dict[type[Exception], bytes] = {
    UnknownConnectionError: b"UNKNOWN_CONNECTION",
    ConfigError: b"CONFIG_ERROR",
    ControlError: b"CONTROL_ERROR",
}


def clip(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, marked with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "\u2026"


class EncodedAmpList(amp.AmpList):
    """An `amp.AmpList` whose entries may also be given already encoded.

    `fit_page` encodes entries to measure them; passing those bytes on saves
    encoding every entry twice.  Decoding is `amp.AmpList`'s.
    """

    def toStringProto(self, inObject: Iterable[Mapping[str, Any] | bytes], proto: Any) -> bytes:
        return b"".join(
            entry if isinstance(entry, bytes) else amp.AmpList.toStringProto(self, [entry], proto)
            for entry in inObject
        )


def fit_page(
    argument: amp.AmpList, entries: Iterable[Mapping[str, Any]], budget: int = PAGE_BYTES
) -> list[bytes]:
    """The encodings of the leading ``entries`` that together fit in ``budget`` bytes.

    An `amp.AmpList` value is the concatenation of its entries' encoded
    boxes, so the size of a prefix is the sum of the entries' sizes.  Entries
    are taken from ``entries`` only as far as needed.
    """
    encoded: list[bytes] = []
    used = 0
    for entry in entries:
        data = amp.AmpList.toStringProto(argument, [entry], None)
        used += len(data)
        if used > budget:
            break
        encoded.append(data)
    return encoded


# Every field of `siptls.registry.ConnectionRecord`, with the address tuples split.
CONNECTION_ENTRY = EncodedAmpList(
    [
        (b"id", amp.Integer()),
        (b"direction", amp.Unicode()),
        (b"local_host", amp.Unicode()),
        (b"local_port", amp.Integer()),
        (b"remote_host", amp.Unicode()),
        (b"remote_port", amp.Integer()),
        (b"state", amp.Unicode()),
        (b"created", amp.Float()),
        (b"last_activity", amp.Float()),
        (b"domain", amp.Unicode(optional=True)),
        (b"domain_reason", amp.Unicode(optional=True)),
        (b"sni", amp.Unicode(optional=True)),
        (b"tls_version", amp.Unicode(optional=True)),
        (b"cipher", amp.Unicode(optional=True)),
        (b"cipher_bits", amp.Integer(optional=True)),
        (b"peer_subject", amp.Unicode(optional=True)),
        (b"peer_issuer", amp.Unicode(optional=True)),
        (b"peer_serial", amp.Unicode(optional=True)),
        (b"peer_not_after", amp.Unicode(optional=True)),
        (b"verification", amp.Unicode(optional=True)),
        (b"generation", amp.Integer()),
        (b"bytes_in", amp.Integer()),
        (b"bytes_out", amp.Integer()),
        (b"messages_in", amp.Integer()),
        (b"messages_out", amp.Integer()),
        (b"queued_cleartext", amp.Integer()),
    ]
)

_NAME_VALUE = [(b"name", amp.Unicode()), (b"value", amp.Unicode())]

#: A list of name/value text pairs (the global options).
NAME_VALUE_LIST = EncodedAmpList(_NAME_VALUE)

# One TLS domain: its name (e.g. "TLSs<default>") and its effective settings
# as name/value text, so new settings need no change to the wire format.
DOMAIN_ENTRY = EncodedAmpList([(b"domain", amp.Unicode()), (b"settings", amp.AmpList(_NAME_VALUE))])


class TLSInfo(amp.Command):
    """``tls.info``: connection counts and counters."""

    commandName = b"tls.info"
    arguments = []
    response = [
        (b"max_connections", amp.Integer()),
        (b"opened_connections", amp.Integer()),
        (b"clear_text_write_queued_bytes", amp.Integer()),
        (b"uptime", amp.Float()),
        (b"generation", amp.Integer()),
        (b"handshakes_ok", amp.Integer()),
        (
            b"handshakes_failed",
            amp.AmpList([(b"reason", amp.Unicode()), (b"count", amp.Integer())]),
        ),
        (b"refused", amp.Integer()),
        (b"opened_total", amp.Integer()),
        (
            b"generations",
            amp.AmpList([(b"generation", amp.Integer()), (b"connections", amp.Integer())]),
        ),
    ]
    errors = _ERRORS


class TLSList(amp.Command):
    """``tls.list``: one page of live connections, in id order.

    ``after`` (a connection id) and ``offset`` select where the page starts;
    ``peer``, ``domain`` and ``sni`` filter.  The page holds at most ``limit``
    entries, fewer if they would not fit in `PAGE_BYTES`.  ``total`` counts
    every match (after ``after``); ``more`` says whether matches remain after
    this page, and ``next_offset``/``last_id`` say how to ask for them.
    """

    commandName = b"tls.list"
    arguments = [
        (b"offset", amp.Integer(optional=True)),
        (b"limit", amp.Integer(optional=True)),
        (b"after", amp.Integer(optional=True)),
        (b"peer", amp.Unicode(optional=True)),
        (b"domain", amp.Unicode(optional=True)),
        (b"sni", amp.Unicode(optional=True)),
    ]
    response = [
        (b"connections", CONNECTION_ENTRY),
        (b"total", amp.Integer()),
        (b"more", amp.Boolean()),
        (b"next_offset", amp.Integer(optional=True)),
        (b"last_id", amp.Integer(optional=True)),
    ]
    errors = _ERRORS


class TLSOptions(amp.Command):
    """``tls.options``: effective global parameters and one page of domains.

    Values are text.  ``domain_offset`` selects the first domain of the page;
    ``next_domain_offset`` is present while more domains remain.
    """

    commandName = b"tls.options"
    arguments = [(b"domain_offset", amp.Integer(optional=True))]
    response = [
        (b"globals", NAME_VALUE_LIST),
        (b"domains", DOMAIN_ENTRY),
        (b"domain_total", amp.Integer()),
        (b"next_domain_offset", amp.Integer(optional=True)),
    ]
    errors = _ERRORS


class TLSKill(amp.Command):
    """``tls.kill ID``: close one connection; `UnknownConnectionError` if no such id."""

    commandName = b"tls.kill"
    arguments = [(b"id", amp.Integer())]
    response = [
        (b"id", amp.Integer()),
        (b"remote_host", amp.Unicode()),
        (b"remote_port", amp.Integer()),
        (b"domain", amp.Unicode(optional=True)),
    ]
    errors = _ERRORS


class TLSReload(amp.Command):
    """``tls.reload``: load the configuration again; the new generation number.

    A refused reload comes back as `ConfigError` carrying the configuration
    error message; the old configuration stays in use.
    """

    commandName = b"tls.reload"
    arguments = []
    response = [(b"generation", amp.Integer())]
    errors = _ERRORS
