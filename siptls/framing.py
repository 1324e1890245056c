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
    "FramingError",
    "Message",
    "NeedData",
    "Ping",
    "Pong",
    "SIPFramer",
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


class Ping:
    """A double CRLF keep-alive between messages (RFC 5626 §4.4.1)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ping)

    def __hash__(self) -> int:
        return hash(Ping)

    def __repr__(self) -> str:
        return "Ping()"


class Pong:
    """A single CRLF between messages: the answer to a ping."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pong)

    def __hash__(self) -> int:
        return hash(Pong)

    def __repr__(self) -> str:
        return "Pong()"


class Message:
    """One framed SIP message: its header block and its body, as bytes.

    ``head`` holds the start line and the header fields without the empty
    line that ends them; ``body`` is exactly ``Content-Length`` octets.
    """

    __slots__ = ("head", "body")

    def __init__(self, head: bytes, body: bytes) -> None:
        self.head = head
        self.body = body

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and (self.head, self.body) == (other.head, other.body)

    def __hash__(self) -> int:
        return hash((self.head, self.body))

    def __repr__(self) -> str:
        return f"Message(head={self.head!r}, body={self.body!r})"


Event = Message | Ping | Pong | FramingError | NeedData

# RFC 3261 §20.14 and §7.3.3: Content-Length, compact form "l".
#   Content-Length  =  ( "Content-Length" / "l" ) HCOLON 1*DIGIT
#   HCOLON  =  *( SP / HTAB ) ":" SWS
# Names are case-insensitive.  The value is everything to the end of the
# line; it is checked below so that "-5", "five" and "" are all refused.
_CONTENT_LENGTH = re.compile(
    rb"(?:^|\n)(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE
)
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

    __slots__ = ("max_header_size", "max_body_size", "_buffer", "_scanned", "_error")

    def __init__(
        self,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    ) -> None:
        self.max_header_size = max_header_size
        self.max_body_size = max_body_size
        self._buffer = b""
        # How far into the buffer the search for the empty line has got, so
        # a header block that arrives in many pieces is scanned once.
        self._scanned = 0
        self._error: FramingError | None = None

    @property
    def buffered(self) -> int:
        """How many received bytes are not yet part of an event."""
        return len(self._buffer)

    def receive_data(self, data: bytes) -> None:
        """Add bytes received from the peer."""
        if data and self._error is None:
            self._buffer = self._buffer + data if self._buffer else bytes(data)

    def next_event(self) -> Event:
        """Return the next event, or :data:`NEED_DATA`."""
        if self._error is not None:
            return self._error
        buffer = self._buffer
        if not buffer:
            return NEED_DATA
        first = buffer[0]
        if first == 0x0D or first == 0x0A:  # CR or LF at a message boundary
            return self._keepalive()
        end = buffer.find(b"\n\r\n", self._scanned)
        # Bare-LF line ends are tolerated; only look before the CRLF end found.
        bare = buffer.find(b"\n\n", self._scanned, end + 1 if end >= 0 else len(buffer))
        if bare >= 0:
            head_end, body_start = bare, bare + 2
        elif end >= 0:
            head_end, body_start = end, end + 3
        else:
            if len(buffer) > self.max_header_size:
                return self._fail(
                    f"The SIP header block is longer than {self.max_header_size} bytes.", 513
                )
            # The empty line may straddle the next chunk: rescan the last 2 bytes.
            self._scanned = max(0, len(buffer) - 2)
            return NEED_DATA
        if head_end + 1 > self.max_header_size:
            return self._fail(
                f"The SIP header block is longer than {self.max_header_size} bytes.", 513
            )
        head = buffer[:head_end + 1]
        length = self._content_length(head)
        if isinstance(length, FramingError):
            length.head = head
            return length
        message_end = body_start + length
        if len(buffer) < message_end:
            self._scanned = head_end
            return NEED_DATA
        self._buffer = buffer[message_end:]
        self._scanned = 0
        if head.endswith(b"\r\n"):
            head = head[:-2]
        else:
            head = head[:-1]
        return Message(head, buffer[body_start:message_end])

    def _keepalive(self) -> Event:
        buffer = self._buffer
        if buffer.startswith(b"\r\n\r\n"):
            self._buffer = buffer[4:]
            return _PING
        if buffer[0] == 0x0A:
            # Bare LFs before a start line are tolerated and ignored.
            self._buffer = buffer.lstrip(b"\n")
            return self.next_event()
        if len(buffer) < 4 and b"\r\n\r\n".startswith(buffer):
            return NEED_DATA  # the start of a ping, or of a pong
        if buffer.startswith(b"\r\n"):
            self._buffer = buffer[2:]
            return _PONG
        return self._fail("A CR not followed by LF stands before a SIP start line.", 400)

    def _content_length(self, head: bytes) -> int | FramingError:
        values = _CONTENT_LENGTH.findall(head)
        if not values:
            return self._fail(
                "The message has no Content-Length header, which a stream transport requires.",
                400,
            )
        lengths = set()
        for raw in values:
            value = raw.strip(b" \t")
            if _DIGITS.fullmatch(value) is None:
                shown = value[:40].decode("latin-1")
                return self._fail(f"The Content-Length value {shown!r} is not a number.", 400)
            lengths.add(int(value))
        if len(lengths) > 1:
            shown = ", ".join(str(n) for n in sorted(lengths))
            return self._fail(f"The message has conflicting Content-Length values ({shown}).", 400)
        length = lengths.pop()
        if length > self.max_body_size:
            return self._fail(
                f"The body of {length} bytes is longer than the {self.max_body_size} bytes "
                "accepted.",
                513,
            )
        return length

    def _fail(self, reason: str, status: int) -> FramingError:
        self._error = FramingError(reason, status)
        self._buffer = b""
        return self._error
