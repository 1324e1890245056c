"""Interop with OpenSSL's command-line client, a peer nobody here wrote."""

from __future__ import annotations

from twisted.internet import defer

from tests.interop.support import ServerTestCase, free_port, require_tool, sip_options


class OpenSSLClientTests(ServerTestCase):
    @defer.inlineCallbacks
    def test_options_and_keepalive(self) -> None:
        """openssl s_client sends OPTIONS and a CRLF CRLF ping: 200 OK and a CRLF pong."""
        openssl = require_tool("openssl")
        service = self.start_server()
        port = self.port_of(service)
        # Write the request, wait for the answer, then ping; -ign_eof keeps reading.
        script = sip_options() + b"\r\n\r\n"
        out, err, code = yield self.run_tool(
            openssl,
            ["s_client", "-connect", f"127.0.0.1:{port}", "-quiet", "-no_ign_eof"],
            stdin=script,
        )
        self.assertIn(b"SIP/2.0 200 OK\r\n", out, err)
        self.assertIn(b"CSeq: 1 OPTIONS\r\n", out)
        # The response ends with the empty line; the pong CRLF follows it.
        self.assertTrue(out.endswith(b"Content-Length: 0\r\n\r\n\r\n"), out[-80:])

    @defer.inlineCallbacks
    def test_tls_versions(self) -> None:
        """The default is TLS 1.2+: TLS 1.1 is refused, 1.2 and 1.3 work."""
        openssl = require_tool("openssl")
        service = self.start_server()
        port = self.port_of(service)
        results = {}
        for flag in ("-tls1_1", "-tls1_2", "-tls1_3"):
            out, err, code = yield self.run_tool(
                openssl,
                ["s_client", "-connect", f"127.0.0.1:{port}", flag, "-quiet", "-no_ign_eof"],
                stdin=sip_options(),
                until=b"Content-Length: 0\r\n\r\n",
            )
            results[flag] = b"SIP/2.0 200 OK" in out
        self.assertEqual(results, {"-tls1_1": False, "-tls1_2": True, "-tls1_3": True})

    @defer.inlineCallbacks
    def test_no_compression_no_renegotiation(self) -> None:
        """Compression is off and a client renegotiation request is refused (TLS 1.2)."""
        openssl = require_tool("openssl")
        service = self.start_server()
        port = self.port_of(service)
        out, err, code = yield self.run_tool(
            openssl,
            ["s_client", "-connect", f"127.0.0.1:{port}", "-tls1_2"],
            stdin=b"R\n",
        )
        text = (out + err).decode("latin-1")
        self.assertIn("Compression: NONE", text)
        self.assertIn("RENEGOTIATING", text)
        self.assertIn("no renegotiation", text)
        self.assertNotIn("SIP/2.0 200 OK", text)


class IPv6Tests(ServerTestCase):
    @defer.inlineCallbacks
    def test_ipv6_listener(self) -> None:
        """tls:[::1]:PORT listens on IPv6 loopback; the registry shows the IPv6 peer."""
        openssl = require_tool("openssl")
        port = free_port("::1")
        service = self.start_server(listen=[f"tls:[::1]:{port}"])
        self.assertEqual(self.port_of(service), port)
        out, err, code = yield self.run_tool(
            openssl,
            ["s_client", "-connect", f"[::1]:{port}", "-quiet", "-no_ign_eof"],
            stdin=sip_options(via_host="[::1]:5999"),
            until=b"Content-Length: 0\r\n\r\n",
        )
        self.assertIn(b"SIP/2.0 200 OK\r\n", out, err)
        self.assertIn(b"Via: SIP/2.0/TLS [::1]:5999;branch=z9hG4bKinterop1\r\n", out)
        info = service.registry.info()
        self.assertEqual(info["handshakes_ok"], 1)
