"""In-memory TLS end to end: the siptls protocol with a real TLS handshake."""

from __future__ import annotations

import trustme
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from siptls.application import OptionsResponder
from siptls.interfaces import ISIPApplication
from siptls.message import Request
from siptls.protocol import ConnectionLimits, ConnectionSweeper
from tests.tlsloop import (
    RecordingClient,
    Server,
    capture_logs,
    connect_client,
    generation_for,
    in_memory_server,
    trusting_client,
)


def options(n: int = 1, body: bytes = b"") -> bytes:
    return (
        b"OPTIONS sip:siptls@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/TLS 127.0.0.1:40000;branch=z9hG4bK%d\r\n"
        b"From: <sip:test@127.0.0.1>;tag=%d\r\nTo: <sip:siptls@127.0.0.1>\r\n"
        b"Call-ID: call-%d\r\nCSeq: %d OPTIONS\r\nMax-Forwards: 70\r\n"
        b"Content-Length: %d\r\n\r\n" % (n, n, n, n, len(body))
    ) + body


@implementer(ISIPApplication)
class Recorder(OptionsResponder):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Request] = []
        self.opened: list[object] = []
        self.closed: list[tuple[object, str]] = []

    def requestReceived(self, request: Request, connection: object) -> None:
        self.requests.append(request)
        super().requestReceived(request, connection)  # type: ignore[arg-type]

    def connectionOpened(self, connection: object) -> None:
        self.opened.append(connection)

    def connectionClosed(self, connection: object, reason: str) -> None:
        self.closed.append((connection, reason))


class ProtocolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.ca = trustme.CA()
        self.app = Recorder()
        self.server = Server(generation_for(self.ca, self.mktemp_dir()), self.app)

    def mktemp_dir(self) -> str:
        import os

        path = self.mktemp()
        os.makedirs(path)
        return path

    def connect(self, **kwargs: object):  # type: ignore[no-untyped-def]
        client = RecordingClient()
        client_tls, server_tls, pump = self.server.connect(
            trusting_client(self.ca.cert_pem.bytes()),
            client,
            **kwargs,  # type: ignore[arg-type]
        )
        pump.flush()
        return client, client_tls, server_tls, pump

    def test_options_answered(self) -> None:
        """OPTIONS over a real TLS handshake gets 200 OK with Allow/Accept/Supported."""
        client, client_tls, server_tls, pump = self.connect()
        self.assertTrue(client.handshake_done)
        client_tls.write(options())
        pump.flush()
        self.assertTrue(client.received.startswith(b"SIP/2.0 200 OK\r\n"), client.received)
        for header in (b"\r\nAllow: ", b"\r\nAccept: ", b"\r\nSupported:", b"\r\nCSeq: 1 OPTIONS"):
            self.assertIn(header, client.received)
        self.assertEqual(len(self.app.opened), 1)
        record = server_tls.wrappedProtocol.record
        self.assertEqual(record.state, "established")
        self.assertEqual(record.tls_version, "TLSv1.3")
        self.assertEqual((record.messages_in, record.messages_out), (1, 1))
        self.assertEqual(record.domain, "TLSs<default>")

    def test_pipelined_one_write(self) -> None:
        """Pipelined requests in one read are all answered, in order, with one write."""
        client, client_tls, server_tls, pump = self.connect()
        writes: list[bytes] = []
        original = server_tls.write
        server_tls.write = lambda data: (writes.append(data), original(data))  # type: ignore[method-assign]
        client_tls.write(b"".join(options(n) for n in range(1, 6)))
        pump.flush()
        self.assertEqual(client.received.count(b"SIP/2.0 200 OK"), 5)
        cseqs = [line for line in client.received.split(b"\r\n") if line.startswith(b"CSeq")]
        self.assertEqual(cseqs, [b"CSeq: %d OPTIONS" % n for n in range(1, 6)])
        self.assertEqual(len(writes), 1)

    def test_other_methods(self) -> None:
        """INVITE gets 501, ACK gets nothing, a stray response is dropped."""
        client, client_tls, _, pump = self.connect()
        invite = options(7).replace(b"OPTIONS", b"INVITE")
        ack = options(8).replace(b"OPTIONS", b"ACK")
        stray = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS x;branch=z9hG4bKx\r\nContent-Length: 0\r\n\r\n"
        client_tls.write(invite + ack + stray)
        pump.flush()
        self.assertEqual(client.received.count(b"SIP/2.0 "), 1)
        self.assertTrue(client.received.startswith(b"SIP/2.0 501 Not Implemented"))

    def test_keepalive(self) -> None:
        """A double-CRLF ping gets a single-CRLF pong; a pong gets nothing."""
        client, client_tls, _, pump = self.connect()
        client_tls.write(b"\r\n\r\n")
        pump.flush()
        self.assertEqual(client.received, b"\r\n")

    def test_bad_message_answered_connection_kept(self) -> None:
        """A well-framed but malformed request gets 400 and the connection stays up."""
        client, client_tls, _, pump = self.connect()
        client_tls.write(options(1).replace(b"1 OPTIONS", b"1 INVITE") + options(2))
        pump.flush()
        self.assertTrue(client.received.startswith(b"SIP/2.0 400 Bad Request"))
        self.assertIn(b"SIP/2.0 200 OK", client.received)
        self.assertIsNone(client.lost)

    def test_framing_error_answered_and_closed(self) -> None:
        """A negative Content-Length gets 400, then the connection closes."""
        client, client_tls, _, pump = self.connect()
        client_tls.write(options(1).replace(b"Content-Length: 0", b"Content-Length: -5"))
        pump.flush()
        self.assertTrue(client.received.startswith(b"SIP/2.0 400 Bad Request"))
        self.assertIsNotNone(client.lost)
        self.assertEqual(len(self.server.registry), 0)
        self.assertIn("framing error", self.app.closed[0][1])

    def test_oversized_message(self) -> None:
        """A body over the limit gets 513 Message Too Large and a close."""
        self.server.sip_factory.limits = ConnectionLimits(max_body_size=100)
        client, client_tls, _, pump = self.connect()
        client_tls.write(options(1, b"x" * 101))
        pump.flush()
        self.assertTrue(client.received.startswith(b"SIP/2.0 513 Message Too Large"))
        self.assertIsNotNone(client.lost)

    def test_garbage_closes_only_that_connection(self) -> None:
        """Binary garbage inside TLS closes that connection, others keep working."""
        good, good_tls, _, good_pump = self.connect(peer=("127.0.0.1", 40001))
        bad, bad_tls, _, bad_pump = self.connect(peer=("127.0.0.1", 40002))
        bad_tls.write(b"\r\x00\xff" * 100)
        bad_pump.flush()
        self.assertIsNotNone(bad.lost)
        good_tls.write(options())
        good_pump.flush()
        self.assertTrue(good.received.startswith(b"SIP/2.0 200 OK"))

    def test_close_reported(self) -> None:
        """A client close removes the record and tells the application why."""
        client, client_tls, _, pump = self.connect()
        self.assertEqual(len(self.server.registry), 1)
        client_tls.loseConnection()
        pump.flush()
        self.assertEqual(len(self.server.registry), 0)
        self.assertEqual(len(self.app.closed), 1)

    def test_max_connections(self) -> None:
        """Connections beyond the maximum are refused at accept and counted."""
        self.server.registry.max_connections = 1
        self.connect(peer=("127.0.0.1", 40001))
        refused, _, _, _ = self.connect(peer=("127.0.0.1", 40002))
        self.assertIsNotNone(refused.lost)
        self.assertEqual(self.server.registry.refused_total, 1)

    def test_handshake_timeout(self) -> None:
        """A peer that never finishes the handshake is closed after handshake_timeout."""
        limits = ConnectionLimits(handshake_timeout=10)
        self.server.sip_factory.limits = limits
        client = RecordingClient()
        client_tls, server_tls, pump = self.server.connect(
            trusting_client(self.ca.cert_pem.bytes()), client, greet=False
        )
        # Nothing is pumped: the ClientHello never reaches the server.
        sweeper = ConnectionSweeper(self.server.registry, limits, self.server.clock)
        self.server.clock.advance(9)
        sweeper.sweep()
        self.assertEqual(len(self.server.registry), 1)
        self.server.clock.advance(2)
        sweeper.sweep()
        pump.flush()
        self.assertEqual(len(self.server.registry), 0)

    def test_idle_timeout(self) -> None:
        """An established connection idle for connection_timeout is closed; traffic resets it."""
        limits = ConnectionLimits(connection_timeout=60)
        self.server.sip_factory.limits = limits
        client, client_tls, _, pump = self.connect()
        sweeper = ConnectionSweeper(self.server.registry, limits, self.server.clock)
        self.server.clock.advance(50)
        client_tls.write(b"\r\n\r\n")
        pump.flush()
        self.server.clock.advance(50)
        sweeper.sweep()
        self.assertEqual(len(self.server.registry), 1)
        self.server.clock.advance(11)
        sweeper.sweep()
        pump.flush()
        self.assertEqual(len(self.server.registry), 0)
        self.assertIsNotNone(client.lost)
        self.assertIn("idle", self.app.closed[0][1])

    def test_send_before_handshake_is_queued(self) -> None:
        """Data sent before the handshake is queued and written in order afterwards."""
        client = RecordingClient()
        client_tls, server_tls, pump = self.server.connect(
            trusting_client(self.ca.cert_pem.bytes()), client, greet=False
        )
        protocol = server_tls.wrappedProtocol
        self.assertFalse(client.handshake_done)
        protocol.send(b"first\r\n")
        protocol.send(b"second\r\n")
        self.assertEqual(protocol.record.queued_cleartext, 15)
        pump.flush()
        self.assertEqual(client.received, b"first\r\nsecond\r\n")
        self.assertEqual(self.server.sip_factory.queue_account.queued, 0)

    def test_queue_limit(self) -> None:
        """A send past con_ct_wq_max fails with SendError and closes only that connection."""
        from siptls.errors import SendError

        self.server.sip_factory.limits = ConnectionLimits(con_ct_wq_max=10)
        client = RecordingClient()
        _, server_tls, pump = self.server.connect(
            trusting_client(self.ca.cert_pem.bytes()), client, greet=False
        )
        protocol = server_tls.wrappedProtocol
        self.assertFalse(client.handshake_done)
        protocol.send(b"12345")
        with self.assertRaises(SendError) as caught:
            protocol.send(b"123456")
        self.assertIn("con_ct_wq_max", str(caught.exception))
        pump.flush()
        self.assertEqual(self.server.sip_factory.queue_account.queued, 0)


class ConnectionLogTests(SynchronousTestCase):
    def run_connection(self, log_connections: bool) -> list[str]:
        events = capture_logs(self)
        server, ca = in_memory_server(
            self, OptionsResponder(), ConnectionLimits(log_connections=log_connections)
        )
        client, client_tls, _, pump = connect_client(server, ca)
        client_tls.write(options())
        pump.flush()
        client_tls.loseConnection()
        pump.flush()
        self.events = events
        return [
            str(e.get("log_format"))
            for e in events
            if e.get("log_namespace") == "siptls.connection"
        ]

    def test_connection_lines(self) -> None:
        """Opened and closed lines carry peer, version and cipher; log_connections=no drops them."""
        lines = self.run_connection(True)
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("established: {version} {cipher}", lines[0])
        self.assertIn("closed: {reason}", lines[1])
        opened = [e for e in self.events if "established" in str(e.get("log_format"))][0]
        self.assertEqual(opened["version"], "TLSv1.3")
        self.assertEqual(opened["peer"], "127.0.0.1:40000")
        self.assertEqual(self.run_connection(False), [])

    def test_failures_always_logged(self) -> None:
        """A failed handshake is logged even with log_connections=no."""
        events = capture_logs(self)
        server, _ = in_memory_server(
            self, OptionsResponder(), ConnectionLimits(log_connections=False)
        )
        connect_client(server, trustme.CA())
        failures = [e for e in events if "handshake with" in str(e.get("log_format"))]
        self.assertEqual(len(failures), 1)


class BackpressureTests(SynchronousTestCase):
    """Output to a peer that does not read is bounded by max_send_buffer."""

    def setUp(self) -> None:
        self.app = Recorder()
        self.server, ca = in_memory_server(self, self.app, ConnectionLimits(max_send_buffer=10_000))
        self.client, _, self.server_tls, self.pump = connect_client(self.server, ca)
        self.protocol = self.server_tls.wrappedProtocol

    def test_pause_stops_reading(self) -> None:
        """When the TCP buffer fills, the connection stops reading requests until it drains."""
        lower = self.server_tls.lowerTransport
        calls: list[str] = []
        lower.pauseProducing = lambda: calls.append("pause")
        lower.resumeProducing = lambda: calls.append("resume")
        self.protocol.pauseProducing()
        self.protocol.pauseProducing()
        self.protocol.resumeProducing()
        self.assertEqual(calls, ["pause", "resume"])

    def test_unread_output_closes_connection(self) -> None:
        """Past max_send_buffer bytes written while paused, only that connection is aborted."""
        self.protocol.pauseProducing()
        for _ in range(9):
            self.protocol.send(b"x" * 1000)
        self.assertEqual(len(self.server.registry), 1)
        self.protocol.send(b"x" * 2000)
        self.pump.flush()
        self.assertEqual(len(self.server.registry), 0)
        self.assertIn("does not read", self.app.closed[0][1])

    def test_output_after_drain_is_not_counted(self) -> None:
        """Output written while the buffer has room does not count toward the cap."""
        for _ in range(30):
            self.protocol.send(b"x" * 1000)
        self.pump.flush()
        self.assertEqual(len(self.server.registry), 1)
        self.assertEqual(len(self.client.received), 30_000)


class RefusalLogTests(SynchronousTestCase):
    def test_refusals_logged_once_per_interval(self) -> None:
        """Connections over tls_max_connections are logged once per 10 s, with the count."""
        events = capture_logs(self)
        server, ca = in_memory_server(self, OptionsResponder(), max_connections=1)
        connect_client(server, ca, peer=("127.0.0.1", 40000))
        for port in range(40001, 40006):
            connect_client(server, ca, peer=("127.0.0.1", port))
        refusals = [e for e in events if "Refused a TLS connection" in str(e.get("log_format"))]
        self.assertEqual(len(refusals), 1)
        self.assertEqual(server.registry.refused_total, 5)
        server.clock.advance(11)
        connect_client(server, ca, peer=("127.0.0.1", 40010))
        refusals = [e for e in events if "Refused a TLS connection" in str(e.get("log_format"))]
        self.assertEqual(len(refusals), 2)
        self.assertEqual(refusals[1]["refused"], 6)


class LogBudgetTests(SynchronousTestCase):
    def test_burst_then_summary(self) -> None:
        """Twenty lines pass per window; the rest are counted and summarised once."""
        from siptls.protocol import LogBudget

        events = capture_logs(self)
        budget = LogBudget(burst=20, interval=10)
        allowed = [budget.allow(0.5) for _ in range(50)]
        self.assertEqual(allowed.count(True), 20)
        self.assertEqual(events, [])
        self.assertTrue(budget.allow(10.5))
        summaries = [e for e in events if "were not logged" in str(e.get("log_format"))]
        self.assertEqual(len(summaries), 1)
        self.assertEqual(summaries[0]["count"], 30)

    def test_bad_messages_budgeted(self) -> None:
        """Thirty bad requests on one connection all get 400, but at most 20 log lines."""
        events = capture_logs(self)
        server, ca = in_memory_server(self, OptionsResponder())
        client, client_tls, _, pump = connect_client(server, ca)
        bad = b"".join(options(n).replace(b"%d OPTIONS" % n, b"%d INVITE" % n) for n in range(30))
        client_tls.write(bad)
        pump.flush()
        self.assertEqual(client.received.count(b"SIP/2.0 400 Bad Request"), 30)
        lines = [e for e in events if "Bad SIP message" in str(e.get("log_format"))]
        self.assertEqual(len(lines), 20)


class TLSRecordTests(SynchronousTestCase):
    """The direct SSL_read/SSL_write path and its fallbacks to pyOpenSSL and Twisted."""

    def setUp(self) -> None:
        self.app = Recorder()
        self.server, ca = in_memory_server(self, self.app, ConnectionLimits(max_body_size=100_000))
        self.client, self.client_tls, self.server_tls, self.pump = connect_client(self.server, ca)

    def test_record_split_byte_by_byte(self) -> None:
        """Ciphertext arriving one byte at a time (partial records) gives one answer."""
        connection = self.client_tls.getHandle()
        connection.send(options(1))
        ciphertext = connection.bio_read(65536)
        for index in range(len(ciphertext)):
            self.server_tls.dataReceived(ciphertext[index : index + 1])
        self.pump.flush()
        self.assertEqual(self.client.received.count(b"SIP/2.0 200 OK"), 1)

    def test_many_records_in_one_read(self) -> None:
        """Several records in one read are all decrypted and answered in order."""
        connection = self.client_tls.getHandle()
        for n in range(1, 6):
            connection.send(options(n))
        self.server_tls.dataReceived(connection.bio_read(65536))
        self.pump.flush()
        cseqs = [line for line in self.client.received.split(b"\r\n") if line.startswith(b"CSeq")]
        self.assertEqual(cseqs, [b"CSeq: %d OPTIONS" % n for n in range(1, 6)])

    def test_large_message_and_large_write(self) -> None:
        """A body spanning several records is framed whole; a write over one record is sent."""
        self.client_tls.write(options(1, body=b"b" * 40_000))
        self.pump.flush()
        self.assertEqual(len(self.app.requests), 1)
        self.assertEqual(len(self.app.requests[0].body), 40_000)
        self.server_tls.wrappedProtocol.send(b"x" * 50_000)
        self.pump.flush()
        self.assertTrue(self.client.received.endswith(b"x" * 50_000))

    def test_close_notify_after_data(self) -> None:
        """A request followed by the peer's close_notify is answered, then the close is clean."""
        self.client_tls.write(options(1))
        self.client_tls.loseConnection()
        self.pump.flush()
        self.assertEqual(len(self.app.requests), 1)
        self.assertEqual(len(self.server.registry), 0)
        self.assertEqual(len(self.app.closed), 1)

    def test_bios_renewed_after_handshake(self) -> None:
        """After the handshake the memory BIOs are replaced by empty ones; traffic goes on."""
        handle = self.server_tls.getHandle()
        self.assertTrue(self.server_tls._bios_renewed)
        first = (handle._into_ssl, handle._from_ssl)
        for n in range(1, 4):
            self.client_tls.write(options(n))
            self.pump.flush()
        self.assertEqual(self.client.received.count(b"SIP/2.0 200 OK"), 3)
        self.assertEqual((handle._into_ssl, handle._from_ssl), first)  # renewed only once

    def test_renewal_waits_for_bytes_in_transit(self) -> None:
        """BIOs holding bytes are not replaced; the renewal happens at a later, empty moment."""
        from OpenSSL._util import lib

        self.server_tls._bios_renewed = False
        handle = self.server_tls.getHandle()
        lib.BIO_write(handle._from_ssl, b"pending", 7)
        self.server_tls._renew_bios()
        self.assertFalse(self.server_tls._bios_renewed)
        self.assertEqual(handle.bio_read(100), b"pending")
        self.server_tls._renew_bios()
        self.assertTrue(self.server_tls._bios_renewed)
        self.client_tls.write(options(9))
        self.pump.flush()
        self.assertIn(b"CSeq: 9 OPTIONS", self.client.received)
