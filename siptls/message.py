"""The SIP message model: start line, header fields, body; no I/O.

A framed message (:class:`siptls.framing.Message`) is parsed into a
:class:`Request` or a :class:`Response`.  Header fields keep their order;
compact names (RFC 3261 §7.3.3) are mapped to their long forms; folded
lines are unfolded.  Values and bodies stay bytes: SIP bodies are not text,
and header values are only decoded where a caller asks.

Parsing checks what every element must check before it acts on a request
(RFC 3261 §8.2 and §16.3): a well-formed start line, SIP/2.0, the mandatory
header fields present once each, and a CSeq whose method matches the
request's.  Failures raise :class:`siptls.errors.ProtocolError` carrying
the status to answer with.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from operator import itemgetter
from typing import Final

from siptls.errors import ProtocolError
from siptls.framing import (
    COMPACT_FORMS,
    TOKEN,
    HeaderLineError,
    Message,
    canonical_name,
    split_header_block,
)

__all__ = [
    "COMPACT_FORMS",
    "Request",
    "Response",
    "SIPMessage",
    "build_response",
    "parse_head_leniently",
    "parse_message",
    "reason_phrase",
    "split_header_values",
]

# How long names are written when siptls writes a header field.
_DISPLAY_NAMES: Final[dict[bytes, bytes]] = {
    b"via": b"Via",
    b"from": b"From",
    b"to": b"To",
    b"call-id": b"Call-ID",
    b"cseq": b"CSeq",
    b"content-length": b"Content-Length",
}

_REASONS: Final[dict[int, str]] = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    481: "Call/Transaction Does Not Exist",
    483: "Too Many Hops",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "Version Not Supported",
    513: "Message Too Large",
}


def reason_phrase(status: int) -> str:
    """The usual reason phrase for ``status``."""
    return _REASONS.get(status, "Unknown")


_TOKEN = TOKEN
# Request-Line  =  Method SP Request-URI SP SIP-Version CRLF
# The URI is any run of non-space bytes that starts with a scheme; a URI in
# <> or with spaces in it is refused here (RFC 4475 §3.1.2.7, §3.1.2.8).
_REQUEST_LINE = re.compile(
    rb"(" + _TOKEN + rb") ([A-Za-z][A-Za-z0-9+.\-]*:[^ <>]+) (SIP/[0-9]+\.[0-9]+)"
)
# Status-Line  =  SIP-Version SP Status-Code SP Reason-Phrase CRLF
_STATUS_LINE = re.compile(rb"(SIP/[0-9]+\.[0-9]+) ([0-9]{3}) ([^\r\n]*)")
_FOLD = re.compile(rb"\r?\n[ \t]+")
# CSeq  =  "CSeq" HCOLON 1*DIGIT LWS Method
_CSEQ = re.compile(rb"([0-9]{1,10})[ \t]+(" + _TOKEN + rb")")
_MAX_CSEQ: Final = 2**31 - 1
_TAG = re.compile(rb";[ \t]*tag[ \t]*=", re.IGNORECASE)

_FIRST: Final = itemgetter(0)

# Single-valued fields a request must carry exactly once (RFC 3261 §8.1.1).
_REQUIRED_ONCE: Final = (b"to", b"from", b"call-id", b"cseq")


def _canonical(name: bytes) -> bytes:
    try:
        return canonical_name(name)
    except HeaderLineError:
        return name.lower()


class SIPMessage:
    """What requests and responses share: header fields and a body.

    ``headers`` is a list of ``(name, value)`` pairs in message order;
    names are lower-case long forms (``b"via"``, never ``b"v"``), values
    are bytes with surrounding whitespace removed.
    """

    __slots__ = ("start_line", "headers", "body")

    def __init__(self, start_line: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.start_line = start_line
        self.headers = headers
        self.body = body

    def get(self, name: str | bytes) -> bytes | None:
        """The first value of the header field ``name``, or ``None``."""
        key = _canonical(name.encode("ascii") if isinstance(name, str) else name)
        for field, value in self.headers:
            if field == key:
                return value
        return None

    def get_all(self, name: str | bytes) -> list[bytes]:
        """Every value of ``name``, one per comma-separated element.

        ``Via: a, b`` and two ``Via`` lines both give ``[a, b]``.
        """
        key = _canonical(name.encode("ascii") if isinstance(name, str) else name)
        values: list[bytes] = []
        for field, value in self.headers:
            if field == key:
                values.extend(split_header_values(value))
        return values

    @property
    def call_id(self) -> bytes | None:
        return self.get(b"call-id")

    @property
    def cseq(self) -> tuple[int, bytes] | None:
        """``(number, method)`` from the CSeq field, or ``None``."""
        value = self.get(b"cseq")
        if value is None:
            return None
        match = _CSEQ.fullmatch(value)
        if match is None:
            return None
        return int(match.group(1)), match.group(2)

    def to_bytes(self) -> bytes:
        """Serialise with long header names and a correct Content-Length."""
        lines = [self.start_line]
        for name, value in self.headers:
            if name != b"content-length":
                lines.append(_display(name) + b": " + value)
        lines.append(b"Content-Length: %d" % len(self.body))
        lines.append(b"")
        return b"\r\n".join(lines) + b"\r\n" + self.body


class Request(SIPMessage):
    """A SIP request."""

    __slots__ = ("method", "uri", "version")

    def __init__(
        self,
        method: bytes,
        uri: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
        version: bytes = b"SIP/2.0",
    ) -> None:
        super().__init__(b"%s %s %s" % (method, uri, version), headers, body)
        self.method = method
        self.uri = uri
        self.version = version

    def __repr__(self) -> str:
        return f"<Request {self.method.decode('latin-1')} {self.uri.decode('latin-1')}>"


class Response(SIPMessage):
    """A SIP response."""

    __slots__ = ("status", "reason", "version")

    def __init__(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
        version: bytes = b"SIP/2.0",
    ) -> None:
        super().__init__(b"%s %d %s" % (version, status, reason), headers, body)
        self.status = status
        self.reason = reason
        self.version = version

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason.decode('latin-1')}>"


def _display(name: bytes) -> bytes:
    display = _DISPLAY_NAMES.get(name)
    if display is None:
        display = b"-".join(part[:1].upper() + part[1:] for part in name.split(b"-"))
    return display


def split_header_values(value: bytes) -> list[bytes]:
    """Split a header value at commas outside quotes and angle brackets."""
    if b"," not in value:
        return [value]
    parts: list[bytes] = []
    start = 0
    quoted = False
    angle = 0
    index = 0
    length = len(value)
    while index < length:
        byte = value[index]
        if quoted:
            if byte == 0x5C:  # backslash: quoted-pair
                index += 1
            elif byte == 0x22:
                quoted = False
        elif byte == 0x22:
            quoted = True
        elif byte == 0x3C:
            angle += 1
        elif byte == 0x3E and angle:
            angle -= 1
        elif byte == 0x2C and not angle:
            parts.append(value[start:index].strip(b" \t"))
            start = index + 1
        index += 1
    parts.append(value[start:].strip(b" \t"))
    return [part for part in parts if part]


def _parse_headers(block: bytes) -> list[tuple[bytes, bytes]]:
    try:
        return split_header_block(block)
    except HeaderLineError as error:
        raise ProtocolError(str(error), 400) from None


def parse_message(message: Message) -> Request | Response:
    """Parse a framed message, checking what a request must have.

    Raises :class:`ProtocolError` with the status to answer: 400 for a
    malformed message, 505 for a SIP version other than 2.0.
    """
    start = message.start
    fields = message.fields
    if start is None or fields is None:
        head = message.head
        newline = head.find(b"\n")
        if newline < 0:
            start, block = head, b""
        else:
            start, block = head[:newline], head[newline + 1 :]
        if start.endswith(b"\r"):
            start = start[:-1]
        fields = _parse_headers(block)
    if start.startswith(b"SIP/"):
        return _parse_response(start, fields, message.body)
    return _parse_request(start, fields, message.body)


def _parse_request(start: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> Request:
    match = _REQUEST_LINE.fullmatch(start)
    if match is None:
        shown = start[:80].decode("latin-1")
        raise ProtocolError(f"The request line {shown!r} is malformed.", 400)
    method, uri, version = match.groups()
    if version != b"SIP/2.0":
        raise ProtocolError(
            f"The SIP version {version.decode('latin-1')!r} is not supported (only SIP/2.0).", 505
        )
    request = Request.__new__(Request)
    request.start_line = start
    request.headers = headers
    request.body = body
    request.method = method
    request.uri = uri
    request.version = version
    _check_request(request)
    return request


def _check_request(request: Request) -> None:
    headers = request.headers
    names = list(map(_FIRST, headers))
    if b"via" not in names:
        raise ProtocolError("The request has no Via header field.", 400)
    for name in _REQUIRED_ONCE:
        count = names.count(name)
        if count != 1:
            shown = _display(name).decode("ascii")
            if count == 0:
                raise ProtocolError(f"The request has no {shown} header field.", 400)
            raise ProtocolError(f"The request has {count} {shown} header fields.", 400)
    if names.count(b"max-forwards") > 1:
        raise ProtocolError("The request has more than one Max-Forwards header field.", 400)
    cseq_value = headers[names.index(b"cseq")][1]
    number, space, method = cseq_value.partition(b" ")
    if space and method == request.method and len(number) < 10 and number.isdigit():
        return  # the usual "1234 OPTIONS"; anything else is checked in full below
    match = _CSEQ.fullmatch(cseq_value)
    if match is None:
        shown = cseq_value[:40].decode("latin-1")
        raise ProtocolError(f"The CSeq value {shown!r} is malformed.", 400)
    number, method = match.groups()
    if len(number) > 9 and int(number) > _MAX_CSEQ:
        raise ProtocolError("The CSeq number is larger than 2**31-1.", 400)
    if method != request.method:
        raise ProtocolError(
            f"The CSeq method {method.decode('latin-1')!r} does not match the request "
            f"method {request.method.decode('latin-1')!r}.",
            400,
        )


def _parse_response(start: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> Response:
    match = _STATUS_LINE.fullmatch(start)
    if match is None:
        shown = start[:80].decode("latin-1")
        raise ProtocolError(f"The status line {shown!r} is malformed.", 400)
    version, code, reason = match.groups()
    status = int(code)
    if version != b"SIP/2.0":
        raise ProtocolError(f"The SIP version {version.decode('latin-1')!r} is not supported.", 505)
    if not 100 <= status <= 699:
        raise ProtocolError(f"The status code {status} is out of range.", 400)
    response = Response.__new__(Response)
    response.start_line = start
    response.headers = headers
    response.body = body
    response.status = status
    response.reason = reason
    response.version = version
    return response


def parse_head_leniently(head: bytes) -> SIPMessage | None:
    """Best-effort parse of a bad request's head, to answer it with an error.

    Returns a message when the fields a response copies (Via, From, To,
    Call-ID, CSeq) can be found and the start line is a request's; ``None``
    otherwise, in which case there is nothing to answer.
    """
    newline = head.find(b"\n")
    start = head[:newline] if newline >= 0 else head
    if start.startswith(b"SIP/") or newline < 0:
        return None
    block = _FOLD.sub(b" ", head[newline + 1 :]).replace(b"\r\n", b"\n")
    headers = []
    for line in block.split(b"\n"):
        name, colon, value = line.partition(b":")
        if colon and name.strip():
            headers.append((_canonical(name), value.strip(b" \t")))
    present = {name for name, _ in headers}
    if not _RESPONSE_FIELDS <= present:
        return None
    return SIPMessage(start.rstrip(b"\r"), headers, b"")


_TAG_SALT: Final = b"sTLS"
_RESPONSE_FIELDS: Final = frozenset((b"via", b"from", b"to", b"call-id", b"cseq"))


def build_response(
    request: SIPMessage,
    status: int,
    reason: str | None = None,
    extra_headers: Iterable[tuple[bytes, bytes]] | bytes = (),
    body: bytes = b"",
    source: tuple[str, int] | None = None,
) -> bytes:
    """The bytes of a response to ``request`` (RFC 3261 §8.2.6).

    ``source`` is the address the request came from: the top Via then gets
    ``received`` when its sent-by host differs (RFC 3261 §18.2.1) and the
    port in an empty ``rport`` (RFC 3581 §4).

    ``extra_headers`` are ``(name, value)`` pairs, or header lines already
    joined with CRLF (what a responder answering the same way every time
    prepares once).

    Every Via, From, To, Call-ID and CSeq field is copied in order; a To
    tag is added when the request has none (except for 100 Trying) and is
    the same for retransmissions of the same request.  ``request`` may be a
    partly parsed message (an error response to a malformed request).
    """
    phrase = _PHRASES.get(status) if reason is None else None
    if phrase is None:
        text = reason if reason is not None else reason_phrase(status)
        phrase = b"SIP/2.0 %d %s" % (status, text.encode("utf-8"))
    lines = [phrase]
    append = lines.append
    to_index = -1
    seed = [_TAG_SALT]
    top_via = source is not None
    for name, value in request.headers:
        display = _COPIED.get(name)
        if display is not None:
            if top_via and name == b"via":
                top_via = False
                # Inline check for the usual case: the sender's own address as
                # sent-by, no rport, one hop in the field: nothing to add.
                host, port = source  # type: ignore[misc]
                address = _ADDRESSES.get(host) or _address_bytes(host)
                if value.endswith(b";rport") and b"," not in value:
                    # Where clients put an empty rport; received goes with it.
                    value = b"%s=%d;received=%s" % (value, port, address)
                else:
                    space = value.find(b" ") + 1
                    after = space + len(address)
                    if not (
                        space
                        and value.startswith(address, space)
                        and value[after : after + 1] in _AFTER_HOST
                        and b"rport" not in value
                        and b"," not in value
                    ):
                        value = _mark_top_via(value, source)  # type: ignore[arg-type]
                seed.append(value)
            elif name == b"to":
                # The tag, when one is needed, is added once the seed is known.
                to_index = len(lines)
            else:
                seed.append(value)
            append(display + value)
    if to_index >= 0 and status != 100:
        to_line = lines[to_index]
        if b"=" not in to_line or _TAG.search(to_line) is None:
            lines[to_index] = to_line + b";tag=%08x" % zlib.crc32(b"|".join(seed))
    if isinstance(extra_headers, bytes):
        if extra_headers:
            append(extra_headers)
    else:
        for name, value in extra_headers:
            append(name + b": " + value)
    if body:
        append(b"Content-Length: %d\r\n\r\n" % len(body))
        return b"\r\n".join(lines) + body
    append(b"Content-Length: 0\r\n\r\n")
    return b"\r\n".join(lines)


# via-parm = sent-protocol LWS sent-by *( SEMI via-params ); the sent-by host
# is a name, an IPv4 address or a bracketed IPv6 reference.
_SENT_BY = re.compile(rb"[^ \t]+[ \t]+(\[[^\]]*\]|[^ \t;:,]+)")
_EMPTY_RPORT = re.compile(rb";[ \t]*rport(?=[ \t]*(?:;|$))", re.IGNORECASE)


def _mark_top_via(value: bytes, source: tuple[str, int]) -> bytes:
    if b"," in value:
        # Several hops in one field: only the first is the sender's.
        first, *rest = split_header_values(value)
        return b", ".join([_mark_via(first, source), *rest])
    return _mark_via(value, source)


_ADDRESSES: dict[str, bytes] = {}


def _address_bytes(host: str) -> bytes:
    address = host.encode("ascii")
    if len(_ADDRESSES) < 4096:
        _ADDRESSES[host] = address
    return address


def _mark_via(value: bytes, source: tuple[str, int]) -> bytes:
    host, port = source
    address = _ADDRESSES.get(host) or _address_bytes(host)
    if value.endswith(b";rport"):
        # Where clients put it; received always goes with rport (RFC 3581 §4).
        return b"%s=%d;received=%s" % (value, port, address)
    # The usual case first: "SIP/2.0/TLS <source IP>[:port];..." with no rport.
    space = value.find(b" ")
    end = space + 1 + len(address)
    same_host = (
        space > 0 and value.startswith(address, space + 1) and value[end : end + 1] in _AFTER_HOST
    )
    if not same_host:
        match = _SENT_BY.match(value)
        sent_by = match.group(1).strip(b"[]") if match is not None else b""
        same_host = sent_by.lower() == address
    rport = b"rport" in value and _EMPTY_RPORT.search(value) is not None
    if rport:
        value = _EMPTY_RPORT.sub(b";rport=%d" % port, value, count=1)
    if rport or not same_host:
        value += b";received=" + address
    return value


_AFTER_HOST: Final = (b":", b";", b"", b" ", b"\t")


_COPIED: Final = {
    b"via": b"Via: ",
    b"from": b"From: ",
    b"to": b"To: ",
    b"call-id": b"Call-ID: ",
    b"cseq": b"CSeq: ",
}
_PHRASES: Final = {
    code: b"SIP/2.0 %d %s" % (code, text.encode()) for code, text in _REASONS.items()
}
