"""Interop with sipsak, a SIP test client nobody here wrote (GnuTLS)."""

from __future__ import annotations

import os

from twisted.internet import defer

from tests.interop.support import ServerTestCase, require_tool


class SipsakTests(ServerTestCase):
    @defer.inlineCallbacks
    def test_options_over_tls(self) -> None:
        """sipsak --transport tls sends OPTIONS and gets 200 OK."""
        sipsak = require_tool("sipsak")
        service = self.start_server()
        port = self.port_of(service)
        # sipsak reads a TLS 1.3 NewSessionTicket as the answer; keep it on
        # TLS 1.2 (reference/peers.md) through GnuTLS's priority override.
        priority = os.path.abspath(self.mktemp())
        with open(priority, "w") as handle:
            handle.write("[overrides]\ndisabled-version = tls1.3\n")
        out, err, code = yield self.run_tool(
            sipsak,
            ["--transport=tls", "-s", "sip:siptls@127.0.0.1", "-r", str(port), "-vv"],
            env={"GNUTLS_SYSTEM_PRIORITY_FILE": priority},
        )
        text = (out + err).decode("latin-1")
        self.assertEqual(code, 0, text)
        self.assertIn("200 OK", text)
        self.assertEqual(service.registry.refused_total, 0)
