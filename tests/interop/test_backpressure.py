"""A peer that sends requests but never reads its answers, on a real socket."""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import defer

from tests.interop.support import ServerTestCase, deferLater, run_process, sip_options

# Sends COUNT pipelined OPTIONS over TLS and never reads; reports how far it got.
NON_READER = r"""
import socket, ssl, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)))
sock.settimeout(3)
request = open(sys.argv[3], "rb").read()
sent = 0
try:
    for _ in range(count):
        sock.sendall(request)
        sent += 1
except (socket.timeout, OSError):
    pass
print(sent, flush=True)
time.sleep(2)
"""


class NonReadingPeerTests(ServerTestCase):
    @defer.inlineCallbacks
    def test_server_stops_reading_and_others_are_served(self) -> Any:
        """A peer that never reads makes the server stop reading from it, not buffer without
        bound; another connection is still answered meanwhile."""
        service = self.start_server()
        port = self.port_of(service)
        script = self.mktemp() + ".py"
        with open(script, "w") as handle:
            handle.write(NON_READER)
        request_file = self.mktemp()
        with open(request_file, "wb") as handle:
            handle.write(sip_options())
        count = 100_000
        peer = run_process(
            sys.executable, [script, str(port), str(count), request_file], timeout=30
        )
        yield deferLater(4.0)
        records = [r for r in service.registry if r.direction == "in"]
        self.assertEqual(len(records), 1)
        stuck = records[0]
        # The server stopped answering long before the end: its reads paused.
        response_size = 300
        self.assertLess(stuck.messages_in, count)
        self.assertLess(stuck.bytes_out, count * response_size)
        # Another client is answered at once.
        from tests.interop.support import require_tool

        openssl = require_tool("openssl")
        out, err, code = yield self.run_tool(
            openssl,
            ["s_client", "-connect", f"127.0.0.1:{port}", "-quiet", "-no_ign_eof"],
            stdin=sip_options(n=2),
            until=b"Content-Length: 0\r\n\r\n",
        )
        self.assertIn(b"SIP/2.0 200 OK", out)
        out, err, code = yield peer
        sent = int(out.strip() or b"0")
        self.assertLess(sent, count, "the server should have stopped reading")
