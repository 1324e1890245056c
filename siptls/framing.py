"""The SIP stream framer: bytes in, events out, no I/O.

Theory of operation
-------------------
A stream transport (TCP, TLS) carries SIP messages back to back, so the
receiver has to find where each one ends.  RFC 3261 §18.3 says how: the
header block ends at the first empty line, and the body is exactly
``Content-Length`` octets long.  On a stream ``Content-Length`` is
mandatory; when it is missing, negative, not a number or given twice with
different values, the receiver cannot know where the next message starts,
so that is an unrecoverable framing error and the connection has to close.

Between messages RFC 5626 §3.5.1 and §4.4.1 put keep-alives: a client sends
a double CRLF (a *ping*) and expects a single CRLF back (a *pong*).  RFC
3261 §7.5 also asks receivers to ignore CRLFs before a start line.  So, at
a message boundary, ``CRLF CRLF`` is a :class:`Ping`, a ``CRLF`` followed
by anything else is a :class:`Pong`, and a bare LF is skipped.

The framer is used like h11's connection: call :meth:`SIPFramer.receive_data`
with whatever arrived, then call :meth:`SIPFramer.next_event` until it
returns :data:`NEED_DATA`.  Events do not depend on how the byte stream was
split into chunks.  Limits on the header block and the body are set in the
constructor; a message over a limit is a :class:`FramingError` whose
``status_hint`` is the status a server answers with (513 Message Too
Large) before it closes the connection.
"""

from __future__ import annotations

import re
from typing import Final

from siptls.errors import ProtocolError

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_MAX_HEADER_SIZE",
    "NEED_DATA",
    "COMPACT_FORMS",
    "FramingError",
    "HeaderLineError",
    "Message",
    "NeedData",
    "Ping",
    "Pong",
    "SIPFramer",
    "canonical_name",
    "split_header_block",
]

DEFAULT_MAX_HEADER_SIZE: Final = 64 * 1024
"""The largest header block (start line and headers) accepted by default."""

DEFAULT_MAX_BODY_SIZE: Final = 64 * 1024
"""The largest body accepted by default."""


class FramingError(ProtocolError):
    """The byte stream cannot be split into SIP messages any more.

    ``head`` is the header block of the message that broke the framing,
    when it is known, so that a server can still address a response to it.
    """

    def __init__(self, message: str, status_hint: int = 400, head: bytes | None = None) -> None:
        super().__init__(message, status_hint)
        self.head = head


class NeedData:
    """The framer needs more bytes before it can say anything more."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


class _KeepAlive:
    """A keep-alive event: all instances of one kind are equal."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Ping(_KeepAlive):
    """A double CRLF keep-alive between messages (RFC 5626 §4.4.1)."""

    __slots__ = ()


class Pong(_KeepAlive):
    """A single CRLF between messages: the answer to a ping."""

    __slots__ = ()


class Message:
    """One framed SIP message: its header block and its body, as bytes.

    ``head`` holds the start line and the header fields without the empty
    line that ends them; ``body`` is exactly ``Content-Length`` octets.
    ``fields`` is the header block already split into ``(name, value)``
    pairs (see :func:`split_header_block`), or ``None`` when a line could
    not be split; the parser then reports what is wrong with it.
    """

    __slots__ = ("head", "body", "start", "fields")

    def __init__(
        self,
        head: bytes,
        body: bytes,
        start: bytes | None = None,
        fields: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.head = head
        self.body = body
        self.start = start
        self.fields = fields

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and (self.head, self.body) == (other.head, other.body)

    def __hash__(self) -> int:
        return hash((self.head, self.body))

    def __repr__(self) -> str:
        return f"Message(head={self.head!r}, body={self.body!r})"


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

# RFC 3261 §25.1:
#   token  =  1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
TOKEN: Final = rb"[A-Za-z0-9\-.!%*_+`'~]+"
_NAME = re.compile(TOKEN)
_FOLD = re.compile(rb"\r?\n[ \t]+")

# Header names as written (any case, compact or long, with the whitespace
# before the colon) -> the lower-case long form.  Bounded, so a peer sending
# random names cannot grow it.
_NAME_CACHE: dict[bytes, bytes] = {}
_NAME_CACHE_MAX: Final = 4096


class HeaderLineError(ValueError):
    """A header line is not ``name: value``."""


def canonical_name(written: bytes) -> bytes:
    """The lower-case long form of a header name as written (``v`` -> ``via``)."""
    canonical = _NAME_CACHE.get(written)
    if canonical is None:
        name = written.rstrip(b" \t")
        if _NAME.fullmatch(name) is None:
            shown = written[:60].decode("latin-1")
            raise HeaderLineError(f"{shown!r} is not a header field name.")
        lowered = name.lower()
        canonical = COMPACT_FORMS.get(lowered, lowered)
        if len(_NAME_CACHE) < _NAME_CACHE_MAX:
            _NAME_CACHE[written] = canonical
    return canonical


def split_header_block(block: bytes) -> list[tuple[bytes, bytes]]:
    """Split header lines into ``(canonical name, value)`` pairs, in order.

    RFC 3261 §7.3.1: ``field-name HCOLON field-value``, where a line starting
    with whitespace continues the previous one (it is unfolded to one space)
    and whitespace around the colon and the value does not count.  Raises
    :class:`HeaderLineError` for a line that is not ``name: value``.
    """
    return _split(block)[0]


def _split(block: bytes) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
    """:func:`split_header_block`, plus the Content-Length values met on the way.

    This runs for every message, so the common case (CRLF line ends, no
    folding, known header names) takes one pass; anything unusual is redone
    by :func:`_split_carefully`.
    """
    fields: list[tuple[bytes, bytes]] = []
    lengths: list[bytes] = []
    if not block:
        return fields, lengths
    lines = block.split(b"\r\n")
    if block.count(b"\n") != len(lines) - 1:
        return _split_carefully(block)  # bare-LF line ends
    append = fields.append
    cache = _NAME_CACHE.get
    for line in lines:
        name, colon, value = line.partition(b":")
        canonical = cache(name)
        if canonical is None:
            if line[:1] in _FOLDING:
                return _split_carefully(block)  # a folded continuation line
            if not colon:
                raise _not_a_header(line)
            canonical = canonical_name(name)
        value = value.strip()
        if canonical == b"content-length":
            lengths.append(value)
        append((canonical, value))
    return fields, lengths


_FOLDING: Final = (b" ", b"\t")


def _not_a_header(line: bytes) -> HeaderLineError:
    shown = line.rstrip(b"\r")[:60].decode("latin-1")
    return HeaderLineError(f"The header line {shown!r} is not 'name: value'.")


def _split_carefully(block: bytes) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
    # RFC 3261 §7.3.1: a line starting with whitespace continues the one
    # before it; replace the line break and the whitespace with one space.
    block = _FOLD.sub(b" ", block).replace(b"\r\n", b"\n")
    fields: list[tuple[bytes, bytes]] = []
    lengths: list[bytes] = []
    for line in block.split(b"\n"):
        name, colon, value = line.partition(b":")
        if not colon:
            raise _not_a_header(line)
        canonical = canonical_name(name)
        value = value.strip()
        if canonical == b"content-length":
            lengths.append(value)
        fields.append((canonical, value))
    return fields, lengths


Event = Message | Ping | Pong | FramingError | NeedData

# RFC 3261 §20.14 and §7.3.3: Content-Length, compact form "l".
#   Content-Length  =  ( "Content-Length" / "l" ) HCOLON 1*DIGIT
#   HCOLON  =  *( SP / HTAB ) ":" SWS
# Names are case-insensitive.  The value is everything to the end of the
# line; it is checked below so that "-5", "five" and "" are all refused.
_CONTENT_LENGTH = re.compile(rb"(?:^|\n)(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
_DIGITS = re.compile(rb"[0-9]{1,10}")

_PING: Final = Ping()
_PONG: Final = Pong()


class SIPFramer:
    """Split a SIP byte stream into messages and keep-alives.

    ``max_header_size`` bounds the start line and headers together,
    ``max_body_size`` the body.  After a :class:`FramingError` the framer
    stays broken: every later call to :meth:`next_event` returns the same
    error, because nothing after it can be trusted.
    """

    __slots__ = ("max_header_size", "max_body_size", "_buffer", "_pos", "_scanned", "_error")

    def __init__(
        self,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    ) -> None:
        self.max_header_size = max_header_size
        self.max_body_size = max_body_size
        self._buffer = b""
        # Where the next event starts in the buffer: consumed bytes are only
        # dropped when new data arrives, so a read holding many pipelined
        # messages is not copied once per message.
        self._pos = 0
        # How far the search for the empty line has got, so a header block
        # that arrives in many pieces is scanned once.
        self._scanned = 0
        self._error: FramingError | None = None

    @property
    def buffered(self) -> int:
        """How many received bytes are not yet part of an event."""
        return len(self._buffer) - self._pos

    def receive_data(self, data: bytes) -> None:
        """Add bytes received from the peer."""
        if data and self._error is None:
            pos = self._pos
            if pos:
                self._scanned -= pos
                self._buffer = self._buffer[pos:] + data
                self._pos = 0
            elif self._buffer:
                self._buffer += data
            else:
                self._buffer = bytes(data)

    def next_event(self) -> Event:
        """Return the next event, or :data:`NEED_DATA`."""
        if self._error is not None:
            return self._error
        buffer = self._buffer
        pos = self._pos
        size = len(buffer)
        if pos >= size:
            if size:
                # Everything was consumed: drop the last read's bytes rather
                # than keep them alive for as long as the connection idles.
                self._buffer = b""
                self._pos = self._scanned = 0
            return NEED_DATA
        first = buffer[pos]
        if first == 0x0D or first == 0x0A:  # CR or LF at a message boundary
            return self._keepalive()
        scanned = self._scanned if self._scanned > pos else pos
        end = buffer.find(b"\n\r\n", scanned)
        # Bare-LF line ends are tolerated; only look before the CRLF end found.
        bare = buffer.find(b"\n\n", scanned, end + 1 if end >= 0 else size)
        if bare >= 0:
            head_end, body_start = bare, bare + 2
        elif end >= 0:
            head_end, body_start = end, end + 3
        else:
            if size - pos > self.max_header_size:
                return self._fail(
                    f"The SIP header block is longer than {self.max_header_size} bytes.", 513
                )
            # The empty line may straddle the next chunk: rescan the last 2 bytes.
            self._scanned = max(pos, size - 2)
            return NEED_DATA
        if head_end + 1 - pos > self.max_header_size:
            return self._fail(
                f"The SIP header block is longer than {self.max_header_size} bytes.", 513
            )
        if buffer[head_end - 1] == 0x0D:
            head = buffer[pos : head_end - 1]
        else:
            head = buffer[pos:head_end]
        newline = head.find(b"\n")
        if newline < 0:
            start, block = head, b""
        else:
            start, block = head[:newline], head[newline + 1 :]
        try:
            fields: list[tuple[bytes, bytes]] | None
            fields, lengths = _split(block)
        except HeaderLineError:
            # The parser will say what is wrong; framing only needs the length.
            fields = None
            lengths = [v.strip(b" \t") for v in _CONTENT_LENGTH.findall(head)]
        length = self._content_length(lengths, head)
        if length < 0:
            assert self._error is not None
            return self._error
        message_end = body_start + length
        if size < message_end:
            self._scanned = head_end
            return NEED_DATA
        self._pos = message_end
        self._scanned = message_end
        if start[-1:] == b"\r":
            start = start[:-1]
        return Message(head, buffer[body_start:message_end], start, fields)

    def _keepalive(self) -> Event:
        buffer = self._buffer
        pos = self._pos
        if buffer.startswith(b"\r\n\r\n", pos):
            self._pos = self._scanned = pos + 4
            return _PING
        if buffer[pos] == 0x0A:
            # Bare LFs before a start line are tolerated and ignored.
            while pos < len(buffer) and buffer[pos] == 0x0A:
                pos += 1
            self._pos = self._scanned = pos
            return self.next_event()
        rest = buffer[pos : pos + 4]
        if len(rest) < 4 and b"\r\n\r\n".startswith(rest):
            return NEED_DATA  # the start of a ping, or of a pong
        if rest.startswith(b"\r\n"):
            self._pos = self._scanned = pos + 2
            return _PONG
        return self._fail("A CR not followed by LF stands before a SIP start line.", 400)

    def _content_length(self, values: list[bytes], head: bytes) -> int:
        if len(values) == 1 and values[0].isdigit() and len(values[0]) <= 10:
            length = int(values[0])
        else:
            if not values:
                self._fail(
                    "The message has no Content-Length header, which a stream transport requires.",
                    400,
                    head,
                )
                return -1
            lengths = set()
            for value in values:
                if _DIGITS.fullmatch(value) is None:
                    shown = value[:40].decode("latin-1")
                    self._fail(f"The Content-Length value {shown!r} is not a number.", 400, head)
                    return -1
                lengths.add(int(value))
            if len(lengths) > 1:
                shown = ", ".join(str(n) for n in sorted(lengths))
                self._fail(
                    f"The message has conflicting Content-Length values ({shown}).", 400, head
                )
                return -1
            length = lengths.pop()
        if length > self.max_body_size:
            self._fail(
                f"The body of {length} bytes is longer than the {self.max_body_size} bytes "
                "accepted.",
                513,
                head,
            )
            return -1
        return length

    def _fail(self, reason: str, status: int, head: bytes | None = None) -> FramingError:
        self._error = FramingError(reason, status, head)
        self._buffer = b""
        self._pos = 0
        return self._error
