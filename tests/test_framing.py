"""Tests for siptls.framing: the SIP stream framer."""

from __future__ import annotations

import csv
import os
import pathlib

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from siptls.framing import NEED_DATA, FramingError, Message, Ping, Pong, SIPFramer


def _torture_dir() -> pathlib.Path:
    """The RFC 4475/5118 corpus: $SIPTLS_TORTURE_DIR, else shared/ beside the checkout."""
    explicit = os.environ.get("SIPTLS_TORTURE_DIR")
    if explicit:
        return pathlib.Path(explicit)
    here = pathlib.Path(__file__).resolve()
    for parent in here.parents[1:4]:
        candidate = parent / "shared" / "sip-torture"
        if (candidate / "index.tsv").exists():
            return candidate
    return here.parents[2] / "shared" / "sip-torture"


TORTURE = _torture_dir()


def options(call_id: bytes = b"a", body: bytes = b"", compact: bool = False) -> bytes:
    length = b"l" if compact else b"Content-Length"
    return (
        b"OPTIONS sip:x@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/TLS 127.0.0.1:5070;branch=z9hG4bK" + call_id + b"\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:x@example.com>\r\n"
        b"Call-ID: "
        + call_id
        + b"\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        + length
        + b": %d\r\n\r\n" % len(body)
        + body
    )


def drain(framer: SIPFramer) -> list[object]:
    events: list[object] = []
    while True:
        event = framer.next_event()
        if event is NEED_DATA:
            return events
        events.append(event)
        if isinstance(event, FramingError):
            return events


def frame_whole(data: bytes, **limits: int) -> list[object]:
    framer = SIPFramer(**limits)
    framer.receive_data(data)
    return drain(framer)


def frame_bytewise(data: bytes, **limits: int) -> list[object]:
    framer = SIPFramer(**limits)
    events: list[object] = []
    for index in range(len(data)):
        framer.receive_data(data[index : index + 1])
        events.extend(drain(framer))
        if events and isinstance(events[-1], FramingError):
            break
    return events


def describe(events: list[object]) -> list[object]:
    """Events as comparable values (errors by status and reason)."""
    return [("error", e.status_hint, str(e)) if isinstance(e, FramingError) else e for e in events]


class FramingCases(SynchronousTestCase):
    """Each case is framed whole, byte by byte, and with trailing bytes."""

    def check(self, data: bytes, expected: list[object], **limits: int) -> None:
        self.assertEqual(describe(frame_whole(data, **limits)), describe(expected))
        self.assertEqual(describe(frame_bytewise(data, **limits)), describe(expected))
        if not expected or not isinstance(expected[-1], FramingError):
            # Trailing bytes of a next message do not change what came before.
            trailing = frame_whole(data + b"INVITE sip:", **limits)
            self.assertEqual(describe(trailing), describe(expected))

    def test_single_message(self) -> None:
        """A message with Content-Length 0 frames as one Message."""
        data = options()
        head = data[: data.index(b"\r\n\r\n")]
        self.check(data, [Message(head, b"")])

    def test_body(self) -> None:
        """The body is exactly Content-Length octets, even with CRLFs inside."""
        body = b"v=0\r\n\r\no=- 0 0 IN IP4 127.0.0.1\r\n"
        data = options(body=body)
        head = data[: data.index(b"\r\n\r\n")]
        self.check(data, [Message(head, body)])

    def test_compact_content_length(self) -> None:
        """The compact form 'l' gives the body length."""
        data = options(body=b"hello", compact=True)
        self.check(data, [Message(data[: data.index(b"\r\n\r\n")], b"hello")])

    def test_case_space_and_leading_zeros(self) -> None:
        """Names are case-insensitive; whitespace around the colon and leading zeros are fine."""
        data = b"MESSAGE sip:x SIP/2.0\r\ncontent-LENGTH \t:  0005 \r\n\r\nhello"
        self.check(data, [Message(b"MESSAGE sip:x SIP/2.0\r\ncontent-LENGTH \t:  0005 ", b"hello")])

    def test_pipelined(self) -> None:
        """Several messages in one chunk give one event each, in order."""
        first, second = options(b"1"), options(b"2", body=b"xyz")
        events = frame_whole(first + second)
        self.assertEqual([e.head.split(b"Call-ID: ")[1][:1] for e in events], [b"1", b"2"])
        self.assertEqual(describe(frame_bytewise(first + second)), describe(events))

    def test_leading_crlf_pong_and_ping(self) -> None:
        """CRLF CRLF is a ping, a lone CRLF before a message is a pong."""
        data = b"\r\n\r\n" + options(b"1") + b"\r\n" + options(b"2")
        events = frame_whole(data)
        self.assertEqual([type(e) for e in events], [Ping, Message, Pong, Message])
        self.assertEqual(describe(frame_bytewise(data)), describe(events))

    def test_ping_alone_waits(self) -> None:
        """A lone CRLF at the end of the data is not yet known to be a pong."""
        self.assertEqual(frame_whole(b"\r\n"), [])
        self.assertEqual(frame_whole(b"\r\n\r\n"), [Ping()])

    def test_bare_lf(self) -> None:
        """Bare-LF line ends are tolerated, and bare LFs between messages ignored."""
        data = b"\nOPTIONS sip:x SIP/2.0\nl: 2\n\nhi"
        self.check(data, [Message(b"OPTIONS sip:x SIP/2.0\nl: 2", b"hi")])

    def test_missing_content_length(self) -> None:
        """Without Content-Length a stream cannot be framed: 400 and the head."""
        data = b"OPTIONS sip:x SIP/2.0\r\nCall-ID: 1\r\n\r\n"
        events = frame_whole(data)
        self.assertEqual(len(events), 1)
        error = events[0]
        assert isinstance(error, FramingError)
        self.assertEqual(error.status_hint, 400)
        self.assertIn("no Content-Length", str(error))
        self.assertEqual(error.head, b"OPTIONS sip:x SIP/2.0\r\nCall-ID: 1")
        self.assertEqual(describe(frame_bytewise(data)), describe(events))

    def test_bad_content_lengths(self) -> None:
        """Negative, non-numeric, empty and conflicting values are framing errors."""
        for value in (b"-1", b"five", b"", b"1 2", b"+3", b"99999999999"):
            events = frame_whole(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: " + value + b"\r\n\r\n")
            self.assertIsInstance(events[-1], FramingError, value)
            self.assertEqual(events[-1].status_hint, 400 if value != b"99999999999" else 400)
        events = frame_whole(b"OPTIONS sip:x SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\nab")
        self.assertIn("conflicting", str(events[-1]))

    def test_repeated_equal_content_length(self) -> None:
        """The same Content-Length twice is not a conflict."""
        data = b"OPTIONS sip:x SIP/2.0\r\nl: 2\r\nContent-Length: 2\r\n\r\nab"
        self.check(data, [Message(data[:-6], b"ab")])

    def test_header_limit(self) -> None:
        """A header block over the limit is 513, whether or not it ever ends."""
        long_header = b"OPTIONS sip:x SIP/2.0\r\nX: " + b"a" * 200
        self.check(
            long_header,
            [FramingError("The SIP header block is longer than 100 bytes.", 513)],
            max_header_size=100,
        )
        self.check(
            long_header + b"\r\nl: 0\r\n\r\n",
            [FramingError("The SIP header block is longer than 100 bytes.", 513)],
            max_header_size=100,
        )

    def test_body_limit(self) -> None:
        """A Content-Length over the body limit is 513 before the body arrives."""
        events = frame_whole(b"OPTIONS sip:x SIP/2.0\r\nl: 101\r\n\r\n", max_body_size=100)
        self.assertEqual(events[0].status_hint, 513)

    def test_error_is_sticky(self) -> None:
        """After a framing error nothing more is framed."""
        framer = SIPFramer()
        framer.receive_data(b"OPTIONS sip:x SIP/2.0\r\nl: x\r\n\r\n")
        error = framer.next_event()
        framer.receive_data(options())
        self.assertIs(framer.next_event(), error)

    def test_cr_without_lf(self) -> None:
        """A stray CR at a message boundary is a framing error."""
        self.check(
            b"\rOPTIONS",
            [FramingError("A CR not followed by LF stands before a SIP start line.", 400)],
        )

    def test_many_bare_lfs(self) -> None:
        """A flood of bare LFs is skipped without recursion problems."""
        self.assertEqual(frame_whole(b"\n" * 100000 + b"\r\n\r\n"), [Ping()])


class TortureCorpus(SynchronousTestCase):
    """The RFC 4475 / RFC 5118 messages frame as index.tsv says."""

    # Valid messages whose archive bytes are incomplete on a stream (index.tsv notes).
    INCOMPLETE = {
        "rfc5118/ipv6-in-sdp.dat",
        "rfc5118/mult-ip-in-sdp.dat",
        "rfc5118/ipv6-correct-abnf-2-colons.dat",
        "rfc5118/ipv6-bug-abnf-3-colons.dat",
        "baddn.dat",
        "clerr.dat",
    }
    BROKEN_FRAMING = {"ncl.dat", "mcl01.dat", "inv2543.dat"}

    def rows(self) -> list[dict[str, str]]:
        index = TORTURE / "index.tsv"
        if not index.exists():
            self.skipTest(f"the torture corpus is not at {TORTURE}")
        with index.open() as handle:
            return list(csv.DictReader(handle, delimiter="\t"))

    def test_every_message(self) -> None:
        """Each message frames the same whole and byte by byte, with the expected outcome."""
        rows = self.rows()
        self.assertGreater(len(rows), 55)
        for row in rows:
            data = (TORTURE / row["name"]).read_bytes()
            whole = frame_whole(data)
            self.assertEqual(describe(frame_bytewise(data)), describe(whole), row["name"])
            if row["name"] in self.INCOMPLETE:
                self.assertEqual(whole, [], row["name"])
            elif row["name"] in self.BROKEN_FRAMING:
                self.assertIsInstance(whole[-1], FramingError, row["name"])
            else:
                self.assertIsInstance(whole[0], Message, row["name"])

    def test_dblreq_stream(self) -> None:
        """dblreq.dat on a stream: REGISTER, a pong CRLF, INVITE, then a framing error."""
        data = (TORTURE / "dblreq.dat").read_bytes() if (TORTURE / "dblreq.dat").exists() else None
        if data is None:
            self.skipTest("no torture corpus")
        events = frame_whole(data)
        self.assertEqual([type(e) for e in events], [Message, Pong, Message, FramingError])
        self.assertTrue(events[0].head.startswith(b"REGISTER"))
        self.assertTrue(events[2].head.startswith(b"INVITE"))


def stream_of(messages: list[bytes]) -> bytes:
    return b"".join(messages)


message_strategy = st.builds(
    lambda call_id, body, compact, ping: (
        (b"\r\n\r\n" if ping else b"") + options(call_id, body, compact)
    ),
    st.binary(min_size=1, max_size=8).map(lambda b: b.hex().encode()),
    st.binary(max_size=64),
    st.booleans(),
    st.booleans(),
)


class FramingProperties(SynchronousTestCase):
    """Hypothesis: splits do not matter, and garbage never crashes the framer."""

    @settings(max_examples=150, deadline=None)
    @given(st.lists(message_strategy, min_size=1, max_size=6), st.data())
    def test_any_split_same_events(self, messages: list[bytes], data: st.DataObject) -> None:
        """Any split of a valid stream gives exactly the events of the whole stream."""
        stream = stream_of(messages)
        expected = frame_whole(stream)
        self.assertEqual(sum(isinstance(e, Message) for e in expected), len(messages))
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
        framer = SIPFramer()
        events: list[object] = []
        last = 0
        for cut in cuts + [len(stream)]:
            framer.receive_data(stream[last:cut])
            events.extend(drain(framer))
            last = cut
        self.assertEqual(events, expected)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.binary(max_size=200), max_size=8))
    def test_garbage_never_raises(self, chunks: list[bytes]) -> None:
        """Arbitrary bytes give events or our FramingError, never another exception."""
        framer = SIPFramer(max_header_size=512, max_body_size=512)
        for chunk in chunks:
            framer.receive_data(chunk)
            for event in drain(framer):
                self.assertIsInstance(event, (Message, Ping, Pong, FramingError))
