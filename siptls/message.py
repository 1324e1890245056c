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
from collections.abc import Iterable, Sequence
from typing import Final

from siptls.errors import ProtocolError
from siptls.framing import Message

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

COMPACT_FORMS: Final[dict[bytes, bytes]] = {
    b"v": b"via",
    b"f": b"from",
    b"t": b"to",
    b"i": b"call-id",
    b"m": b"contact",
    b"l": b"content-length",
    b"c": b"content-type",
    b"k": b"supported",
    b"s": b"subject",
    b"e": b"content-encoding",
    b"o": b"event",
    b"r": b"refer-to",
    b"b": b"referred-by",
    b"u": b"allow-events",
    b"x": b"session-expires",
    b"a": b"accept-contact",
    b"y": b"identity",
}

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


# RFC 3261 §25.1:
#   token  =  1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
_TOKEN = rb"[A-Za-z0-9\-.!%*_+`'~]+"
# Request-Line  =  Method SP Request-URI SP SIP-Version CRLF
# The URI is any run of non-space bytes that starts with a scheme; a URI in
# <> or with spaces in it is refused here (RFC 4475 §3.1.2.7, §3.1.2.8).
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([A-Za-z][A-Za-z0-9+.\-]*:[^ <>]+) (SIP/[0-9]+\.[0-9]+)")
# Status-Line  =  SIP-Version SP Status-Code SP Reason-Phrase CRLF
_STATUS_LINE = re.compile(rb"(SIP/[0-9]+\.[0-9]+) ([0-9]{3}) ([^\r\n]*)")
# message-header  =  field-name HCOLON field-value CRLF, one per line after
# unfolding.  Anchored per line so a line without a colon cannot hide.
_HEADER_LINE = re.compile(rb"^(" + _TOKEN + rb")[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", re.MULTILINE)
_FOLD = re.compile(rb"\r?\n[ \t]+")
# CSeq  =  "CSeq" HCOLON 1*DIGIT LWS Method
_CSEQ = re.compile(rb"([0-9]{1,10})[ \t]+(" + _TOKEN + rb")")
_MAX_CSEQ: Final = 2**31 - 1
_TAG = re.compile(rb";[ \t]*tag[ \t]*=", re.IGNORECASE)

# Single-valued fields a request must carry exactly once (RFC 3261 §8.1.1).
_REQUIRED_ONCE: Final = (b"to", b"from", b"call-id", b"cseq")

_NAME_CACHE: dict[bytes, bytes] = {}


def _canonical(name: bytes) -> bytes:
    canonical = _NAME_CACHE.get(name)
    if canonical is None:
        lowered = name.lower()
        canonical = COMPACT_FORMS.get(lowered, lowered)
        if len(_NAME_CACHE) < 4096:
            _NAME_CACHE[name] = canonical
    return canonical


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
    if not block:
        return []
    if b"\n " in block or b"\n\t" in block:
        block = _FOLD.sub(b" ", block)
    fields = _HEADER_LINE.findall(block)
    if len(fields) != block.count(b"\n") + 1:
        for line in block.split(b"\n"):
            if _HEADER_LINE.fullmatch(line.rstrip(b"\r")) is None:
                shown = line.rstrip(b"\r")[:60].decode("latin-1")
                raise ProtocolError(f"The header line {shown!r} is not 'name: value'.", 400)
        raise ProtocolError("The header block is malformed.", 400)
    return [(_NAME_CACHE.get(name) or _canonical(name), value) for name, value in fields]


def parse_message(message: Message) -> Request | Response:
    """Parse a framed message, checking what a request must have.

    Raises :class:`ProtocolError` with the status to answer: 400 for a
    malformed message, 505 for a SIP version other than 2.0.
    """
    head = message.head
    newline = head.find(b"\n")
    if newline < 0:
        start, block = head, b""
    else:
        start, block = head[:newline], head[newline + 1 :]
    if start.endswith(b"\r"):
        start = start[:-1]
    if start.startswith(b"SIP/"):
        return _parse_response(start, block, message.body)
    return _parse_request(start, block, message.body)


def _parse_request(start: bytes, block: bytes, body: bytes) -> Request:
    match = _REQUEST_LINE.fullmatch(start)
    if match is None:
        shown = start[:80].decode("latin-1")
        raise ProtocolError(f"The request line {shown!r} is malformed.", 400)
    method, uri, version = match.groups()
    if version != b"SIP/2.0":
        raise ProtocolError(
            f"The SIP version {version.decode('latin-1')!r} is not supported (only SIP/2.0).", 505
        )
    headers = _parse_headers(block)
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
    counts: dict[bytes, int] = {}
    cseq_value = b""
    has_via = False
    for name, value in request.headers:
        if name in _COUNTED:
            counts[name] = counts.get(name, 0) + 1
            if name == b"cseq":
                cseq_value = value
        elif name == b"via":
            has_via = True
    if not has_via:
        raise ProtocolError("The request has no Via header field.", 400)
    for name in _REQUIRED_ONCE:
        count = counts.get(name, 0)
        if count != 1:
            shown = _display(name).decode("ascii")
            if count == 0:
                raise ProtocolError(f"The request has no {shown} header field.", 400)
            raise ProtocolError(f"The request has {count} {shown} header fields.", 400)
    if counts.get(b"max-forwards", 0) > 1:
        raise ProtocolError("The request has more than one Max-Forwards header field.", 400)
    match = _CSEQ.fullmatch(cseq_value)
    if match is None:
        shown = cseq_value[:40].decode("latin-1")
        raise ProtocolError(f"The CSeq value {shown!r} is malformed.", 400)
    if int(match.group(1)) > _MAX_CSEQ:
        raise ProtocolError("The CSeq number is larger than 2**31-1.", 400)
    if match.group(2) != request.method:
        raise ProtocolError(
            f"The CSeq method {match.group(2).decode('latin-1')!r} does not match the request "
            f"method {request.method.decode('latin-1')!r}.",
            400,
        )


_COUNTED: Final = frozenset(_REQUIRED_ONCE + (b"max-forwards",))


def _parse_response(start: bytes, block: bytes, body: bytes) -> Response:
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
    response.headers = _parse_headers(block)
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
    block = _FOLD.sub(b" ", head[newline + 1 :])
    headers = [(_canonical(name), value) for name, value in _HEADER_LINE.findall(block)]
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
    extra_headers: Sequence[tuple[bytes, bytes]] | Iterable[tuple[bytes, bytes]] = (),
    body: bytes = b"",
) -> bytes:
    """The bytes of a response to ``request`` (RFC 3261 §8.2.6).

    Every Via, From, To, Call-ID and CSeq field is copied in order; a To
    tag is added when the request has none (except for 100 Trying) and is
    the same for retransmissions of the same request.  ``request`` may be a
    partly parsed message (an error response to a malformed request).
    """
    phrase = (reason if reason is not None else reason_phrase(status)).encode("utf-8")
    lines = [b"SIP/2.0 %d %s" % (status, phrase)]
    for name, value in request.headers:
        if name in _RESPONSE_FIELDS:
            if name == b"to" and status != 100 and _TAG.search(value) is None:
                value = value + b";tag=" + _to_tag(request)
            lines.append(_DISPLAY_NAMES[name] + b": " + value)
    for name, value in extra_headers:
        lines.append(name + b": " + value)
    lines.append(b"Content-Length: %d\r\n" % len(body))
    return b"\r\n".join(lines) + b"\r\n" + body


def _to_tag(request: SIPMessage) -> bytes:
    # Stateless, but the same for a retransmission: derived from the fields
    # that identify the request.
    seed = (request.get(b"call-id") or b"") + (request.get(b"from") or b"")
    seed += (request.get(b"cseq") or b"") + _TAG_SALT
    return b"%08x" % zlib.crc32(seed)
