"""Peers that are not TLS at all: refused cleanly, counted, and harmless to others."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import defer, threads

from tests.interop.support import ServerTestCase, deferLater, require_tool, sip_options


def send_plain(port: int, data: bytes) -> bytes:
    """Send clear text to the TLS port; return what comes back before the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(4096)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


class NotTLSTests(ServerTestCase):
    @defer.inlineCallbacks
    def test_plain_sip_and_garbage_are_refused(self) -> Any:
        """Plain SIP and random bytes on the TLS port end in a TLS alert and a close, are
        counted as failed handshakes, and a real TLS client is served right after."""
        openssl = require_tool("openssl")
        service = self.start_server()
        port = self.port_of(service)
        answer = yield threads.deferToThread(send_plain, port, sip_options())
        self.assertNotIn(b"SIP/2.0", answer)
        # A TLS alert record (content type 21) or nothing at all, then EOF.
        self.assertTrue(answer == b"" or answer[:1] == b"\x15", answer[:20])
        yield threads.deferToThread(send_plain, port, bytes(range(256)) * 4)
        yield deferLater(0.2)
        info = service.registry.info()
        self.assertEqual(info["handshakes_ok"], 0)
        self.assertEqual(sum(info["handshakes_failed"].values()), 2)
        self.assertEqual(len(service.registry), 0)
        out, err, code = yield self.run_tool(
            openssl,
            ["s_client", "-connect", f"127.0.0.1:{port}", "-quiet", "-no_ign_eof"],
            stdin=sip_options(),
            until=b"Content-Length: 0\r\n\r\n",
        )
        self.assertIn(b"SIP/2.0 200 OK", out)
