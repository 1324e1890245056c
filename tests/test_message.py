"""Tests for siptls.message: parsing and response construction."""

from __future__ import annotations

import csv

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from siptls.errors import ProtocolError
from siptls.framing import Message
from siptls.message import (
    Request,
    Response,
    build_response,
    parse_head_leniently,
    parse_message,
    split_header_values,
)
from tests.test_framing import TORTURE, frame_whole

REQUEST = (
    b"OPTIONS sip:x@example.com SIP/2.0\r\n"
    b"v: SIP/2.0/TLS a.example.com;branch=z9hG4bK1, SIP/2.0/TLS b.example.com;branch=z9hG4bK2\r\n"
    b"Via: SIP/2.0/TLS c.example.com\r\n ;branch=z9hG4bK3\r\n"
    b'f: "A, B" <sip:a@example.com>;tag=77\r\n'
    b"t: <sip:x@example.com>\r\n"
    b"i: call-1\r\n"
    b"CSeq: 0005 OPTIONS\r\n"
    b"Max-Forwards: 70\r\n"
    b"k: path, outbound\r\n"
    b"l: 0"
)


def parse(head: bytes, body: bytes = b"") -> Request | Response:
    return parse_message(Message(head, body))


class ParseTests(SynchronousTestCase):
    def test_request(self) -> None:
        """Start line, compact names mapped to long ones, folding undone, order kept."""
        request = parse(REQUEST)
        assert isinstance(request, Request)
        self.assertEqual((request.method, request.uri), (b"OPTIONS", b"sip:x@example.com"))
        self.assertEqual([n for n, _ in request.headers][:3], [b"via", b"via", b"from"])
        self.assertEqual(request.get("Call-ID"), b"call-1")
        self.assertEqual(request.get(b"i"), b"call-1")
        self.assertEqual(request.cseq, (5, b"OPTIONS"))
        self.assertEqual(request.get_all("supported"), [b"path", b"outbound"])

    def test_via_split(self) -> None:
        """Multi-valued Via splits at commas into one entry per hop, across lines."""
        request = parse(REQUEST)
        vias = request.get_all("via")
        self.assertEqual(len(vias), 3)
        self.assertEqual(vias[2], b"SIP/2.0/TLS c.example.com ;branch=z9hG4bK3")

    def test_split_respects_quotes_and_brackets(self) -> None:
        """Commas inside quotes or <...> do not split values."""
        self.assertEqual(
            split_header_values(b'"A, B" <sip:a@x;p=1,2>, <sip:b@y>'),
            [b'"A, B" <sip:a@x;p=1,2>', b"<sip:b@y>"],
        )

    def test_response(self) -> None:
        """A status line parses into status and reason; the reason may be empty."""
        response = parse(b"SIP/2.0 100 \r\nVia: SIP/2.0/TLS x\r\nl: 0")
        assert isinstance(response, Response)
        self.assertEqual((response.status, response.reason), (100, b""))

    def test_body_is_bytes(self) -> None:
        """The body stays the exact bytes, binary included."""
        body = bytes(range(256))
        self.assertEqual(parse(REQUEST, body).body, body)

    def test_errors(self) -> None:
        """Malformed requests raise ProtocolError with the status to answer."""
        cases = {
            b"OPTIONS  sip:x SIP/2.0": 400,
            b"OPTIONS sip:x SIP/2.0 ": 400,
            b"OPTIONS <sip:x> SIP/2.0": 400,
            b"OPTIONS sip:x SIP/3.0": 505,
        }
        for start, status in cases.items():
            with self.assertRaises(ProtocolError) as caught:
                parse(start + REQUEST[REQUEST.index(b"\r\n") :])
            self.assertEqual(caught.exception.status_hint, status, start)
        for bad, fragment in [
            (REQUEST.replace(b"i: call-1\r\n", b""), "no Call-ID"),
            (
                REQUEST.replace(
                    b"t: <sip:x@example.com>\r\n", b"t: <sip:x@example.com>\r\nTo: <sip:y@z>\r\n"
                ),
                "2 To",
            ),
            (REQUEST.replace(b"0005 OPTIONS", b"1 INVITE"), "does not match"),
            (REQUEST.replace(b"0005 OPTIONS", b"4294967296 OPTIONS"), "2**31"),
            (REQUEST.replace(b"Max-Forwards: 70", b"Max-Forwards 70"), "not 'name: value'"),
            (b"OPTIONS sip:x SIP/2.0\r\nl: 0", "no Via"),
            (b"SIP/2.0 4294967301 big\r\nl: 0", "malformed"),
            (b"SIP/2.0 099 low\r\nl: 0", "out of range"),
        ]:
            with self.assertRaises(ProtocolError) as caught:
                parse(bad)
            self.assertIn(fragment, str(caught.exception))

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=300), st.binary(max_size=20))
    def test_garbage(self, head: bytes, body: bytes) -> None:
        """Any bytes parse or raise ProtocolError, never another exception."""
        try:
            parse(head, body)
        except ProtocolError:
            pass


class TortureParse(SynchronousTestCase):
    """The torture messages parse (valid ones must) or are refused with a status."""

    # Invalid messages siptls refuses; the others it accepts liberally, as RFC 4475 allows.
    REFUSED = {
        "scalar02.dat": 400,
        "ltgtruri.dat": 400,
        "lwsruri.dat": 400,
        "lwsstart.dat": 400,
        "trws.dat": 400,
        "badvers.dat": 505,
        "mismatch01.dat": 400,
        "mismatch02.dat": 400,
        "bigcode.dat": 400,
        "insuf.dat": 400,
        "multi01.dat": 400,
    }

    def test_corpus(self) -> None:
        """Every framed torture message parses, or is refused with the expected status."""
        index = TORTURE / "index.tsv"
        if not index.exists():
            self.skipTest(f"the torture corpus is not at {TORTURE}")
        seen = 0
        with index.open() as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                events = frame_whole((TORTURE / row["name"]).read_bytes())
                messages = [e for e in events if isinstance(e, Message)]
                for message in messages[:1]:
                    seen += 1
                    if row["name"] in self.REFUSED:
                        with self.assertRaises(ProtocolError) as caught:
                            parse_message(message)
                        self.assertEqual(caught.exception.status_hint, self.REFUSED[row["name"]])
                    else:
                        parse_message(message)
        self.assertGreater(seen, 45)

    def test_valid_messages_parse(self) -> None:
        """Every message index.tsv calls valid and that is complete parses."""
        index = TORTURE / "index.tsv"
        if not index.exists():
            self.skipTest(f"the torture corpus is not at {TORTURE}")
        with index.open() as handle:
            rows = [r for r in csv.DictReader(handle, delimiter="\t") if r["category"] == "valid"]
        parsed = 0
        for row in rows:
            events = frame_whole((TORTURE / row["name"]).read_bytes())
            for message in [e for e in events if isinstance(e, Message)][:1]:
                parse_message(message)
                parsed += 1
        self.assertGreaterEqual(parsed, len(rows) - 3)


class ResponseTests(SynchronousTestCase):
    def test_copies_fields_and_adds_tag(self) -> None:
        """Via (all, in order), From, To with a tag, Call-ID and CSeq are copied (§8.2.6)."""
        request = parse(REQUEST)
        data = build_response(request, 200, extra_headers=[(b"Allow", b"OPTIONS")])
        response = parse(data[: data.index(b"\r\n\r\n")])
        assert isinstance(response, Response)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.get_all("via"), request.get_all("via"))
        self.assertEqual(response.get("from"), request.get("from"))
        self.assertRegex(response.get("to").decode(), r"^<sip:x@example.com>;tag=[0-9a-f]{8}$")
        self.assertEqual(response.get("call-id"), b"call-1")
        self.assertEqual(response.get("cseq"), b"0005 OPTIONS")
        self.assertEqual(response.get("allow"), b"OPTIONS")
        self.assertTrue(data.endswith(b"Content-Length: 0\r\n\r\n"))

    def test_tag_stable_and_kept(self) -> None:
        """A retransmission gets the same tag; an existing To tag is kept; 100 gets none."""
        request = parse(REQUEST)
        self.assertEqual(build_response(request, 200), build_response(request, 200))
        tagged = parse(REQUEST.replace(b"t: <sip:x@example.com>", b"t: <sip:x@example.com>;TAG=9"))
        self.assertIn(b"To: <sip:x@example.com>;TAG=9\r\n", build_response(tagged, 200))
        self.assertIn(b"To: <sip:x@example.com>\r\n", build_response(request, 100))

    def test_body_length(self) -> None:
        """Content-Length matches the body."""
        data = build_response(parse(REQUEST), 200, body=b"abc")
        self.assertTrue(data.endswith(b"Content-Length: 3\r\n\r\nabc"))

    def test_lenient_head(self) -> None:
        """A request with a bad CSeq can still be answered; a response cannot."""
        bad = REQUEST.replace(b"0005 OPTIONS", b"x OPTIONS")
        message = parse_head_leniently(bad)
        assert message is not None
        self.assertIn(b"SIP/2.0 400 Bad Request", build_response(message, 400))
        self.assertIsNone(parse_head_leniently(b"SIP/2.0 200 OK\r\nl: 0"))
        self.assertIsNone(parse_head_leniently(b"OPTIONS sip:x SIP/2.0\r\nl: 0"))

    def test_to_bytes_round_trip(self) -> None:
        """Serialising a parsed message and parsing it again keeps every field."""
        request = parse(REQUEST, b"body")
        data = request.to_bytes()
        again = parse(data[: data.index(b"\r\n\r\n")], b"body")
        self.assertEqual(
            again.headers,
            [h for h in request.headers if h[0] != b"content-length"] + [(b"content-length", b"4")],
        )


class ViaMarkingTests(SynchronousTestCase):
    """The top Via of a response says where the request really came from."""

    def response_vias(self, via: bytes, source: tuple[str, int]) -> list[bytes]:
        request = parse(
            REQUEST.replace(b"v: SIP/2.0/TLS a.example.com;branch=z9hG4bK1", b"v: " + via)
        )
        data = build_response(request, 200, source=source)
        return parse(data[: data.index(b"\r\n\r\n")]).get_all("via")

    def test_rport_filled_and_received_added(self) -> None:
        """An empty rport gets the source port and received the source IP (RFC 3581)."""
        vias = self.response_vias(
            b"SIP/2.0/TLS 127.0.0.1:15202;branch=z9hG4bKx;rport", ("127.0.0.1", 55962)
        )
        self.assertEqual(
            vias[0], b"SIP/2.0/TLS 127.0.0.1:15202;branch=z9hG4bKx;rport=55962;received=127.0.0.1"
        )
        self.assertEqual(vias[1], b"SIP/2.0/TLS b.example.com;branch=z9hG4bK2")

    def test_received_when_host_differs(self) -> None:
        """A sent-by name or another address gets received; the same address gets nothing."""
        vias = self.response_vias(
            b"SIP/2.0/TLS phone.example.com;branch=z9hG4bKx", ("192.0.2.7", 5061)
        )
        self.assertEqual(
            vias[0], b"SIP/2.0/TLS phone.example.com;branch=z9hG4bKx;received=192.0.2.7"
        )
        same = self.response_vias(
            b"SIP/2.0/TLS 192.0.2.7:5070;branch=z9hG4bKx", ("192.0.2.7", 5061)
        )
        self.assertEqual(same[0], b"SIP/2.0/TLS 192.0.2.7:5070;branch=z9hG4bKx")
        v6 = self.response_vias(b"SIP/2.0/TLS [::1]:5070;branch=z9hG4bKx", ("::1", 5061))
        self.assertEqual(v6[0], b"SIP/2.0/TLS [::1]:5070;branch=z9hG4bKx")

    def test_rport_with_value_kept(self) -> None:
        """An rport that already has a value is left alone."""
        vias = self.response_vias(
            b"SIP/2.0/TLS 127.0.0.1;rport=9;branch=z9hG4bKx", ("127.0.0.1", 4)
        )
        self.assertEqual(vias[0], b"SIP/2.0/TLS 127.0.0.1;rport=9;branch=z9hG4bKx")
