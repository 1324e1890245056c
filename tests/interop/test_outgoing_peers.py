"""Outgoing TLS from siptls to real peers: openssl s_server and Kamailio, on loopback."""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet import defer, protocol, reactor

from siptls.errors import IdentityError
from siptls.outgoing import options_request
from tests.certs import make_leaf
from tests.interop.support import deferLater, free_port, require_tool
from tests.test_outgoing import OutgoingTestCase


class _Peer(protocol.ProcessProtocol):
    """A peer process: collects its output, fires ``ready`` on a marker, ``ended`` at exit."""

    def __init__(self, marker: bytes | None) -> None:
        self.output = b""
        self.marker = marker
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if self.marker and self.marker in self.output and not self.ready.called:
            self.ready.callback(None)

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        if self.marker and not self.ready.called:
            self.ready.errback(RuntimeError(self.output.decode("latin-1")[-2000:]))
        self.ended.callback(None)


class PeerTestCase(OutgoingTestCase):
    timeout = 45

    def spawn(self, argv: list[str], marker: bytes | None = None) -> _Peer:
        """Run ``argv``; its stdin stays open (s_server stops at EOF); killed at cleanup."""
        peer = _Peer(marker)
        transport = reactor.spawnProcess(peer, argv[0], argv, env=dict(os.environ))

        def signal(name: str) -> None:
            if not peer.ended.called:
                try:
                    transport.signalProcess(name)
                except Exception:
                    pass

        def stop() -> defer.Deferred[None]:
            # TERM: Kamailio's main process then stops its children, which
            # share our output pipes; KILL only if that takes too long.
            signal("TERM")
            killer = reactor.callLater(5, signal, "KILL")
            peer.ended.addBoth(lambda _: killer.cancel() if killer.active() else None)
            return peer.ended

        self.addCleanup(stop)
        return peer

    @defer.inlineCallbacks
    def wait_listening(self, port: int, peer: _Peer) -> Any:
        for _ in range(150):
            if peer.ended.called:
                self.fail(f"the peer exited: {peer.output.decode('latin-1')[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                yield deferLater(0.05)
        self.fail("the peer did not start listening within 7.5 s")


class OpenSSLServerTests(PeerTestCase):
    def s_server(self, *extra: str) -> tuple[_Peer, int]:
        openssl = require_tool("openssl")
        default = self.material.leaf(dns=["default.example.test"])
        named = self.material.leaf(uris=["sip:sni.example.test"])
        port = free_port()
        argv = [
            openssl,
            "s_server",
            "-accept",
            f"127.0.0.1:{port}",
            "-naccept",
            "1",
            "-cert",
            default[0],
            "-key",
            default[1],
            "-servername",
            "sni.example.test",
            "-cert2",
            named[0],
            "-key2",
            named[1],
            "-tlsextdebug",
            *extra,
        ]
        return self.spawn(argv, b"ACCEPT"), port

    @defer.inlineCallbacks
    def test_sni_observed_and_options_received(self) -> Any:
        """s_server sees our SNI, switches to the certificate for it, and receives the OPTIONS."""
        server, port = self.s_server()
        yield server.ready
        sender, _ = self.client()
        connection = yield sender.send(
            options_request("sips:sni.example.test"),
            f"sips:127.0.0.1:{port}",
            server_name="sni.example.test",
        )
        self.assertEqual(connection.identity.identity_type, "uri")
        for _ in range(100):
            if b"OPTIONS sips:sni.example.test" in server.output:
                break
            yield deferLater(0.02)
        self.assertIn(b'Hostname in TLS extension: "sni.example.test"', server.output)
        self.assertIn(b"Switching server context.", server.output)
        self.assertIn(b"OPTIONS sips:sni.example.test SIP/2.0\r\n", server.output)

    @defer.inlineCallbacks
    def test_other_name_refused(self) -> Any:
        """s_server presents its default certificate for an unknown SNI: IdentityError."""
        server, port = self.s_server()
        yield server.ready
        sender, _ = self.client()
        error = yield self.assertFailure(
            sender.send(b"x", ("127.0.0.1", port), server_name="unknown.example.test"),
            IdentityError,
        )
        self.assertIn("unknown.example.test", str(error))
        self.assertIn(b"unknown.exa", server.output)  # s_server's dump of our SNI

    @defer.inlineCallbacks
    def test_dead_flow_closed(self) -> Any:
        """s_server never answers the double-CRLF ping: the flow is closed as dead."""
        server, port = self.s_server()
        yield server.ready
        sender, recorder = self.client(
            params={"keepalive_interval": "0.2", "keepalive_timeout": "0.3"}
        )
        closed = recorder.wait_closed()
        connection = yield sender.send(
            options_request("sips:x"), ("127.0.0.1", port), server_name="sni.example.test"
        )
        reason = yield closed
        self.assertIn("keep-alive: no pong within 0.3 s", reason)
        self.assertEqual(connection.pings_sent, 1)


KAMAILIO_CFG = """#!KAMAILIO
debug=2
log_stderror=yes
children=1
tcp_children=1
auto_aliases=no
enable_tls=yes
listen=tls:127.0.0.1:{port}

loadmodule "tls.so"
modparam("tls", "config", "{tls_cfg}")
loadmodule "sl.so"
loadmodule "tm.so"

request_route {{
    if (uri =~ "^sip:relay@") {{
        if (!t_relay()) {{
            sl_reply_error();
        }}
        exit;
    }}
    if (method == "OPTIONS") {{
        sl_send_reply("200", "OK");
        exit;
    }}
    sl_send_reply("501", "Not Implemented");
}}
"""

KAMAILIO_TLS_CFG = """[server:default]
method = TLSv1.2+
certificate = {cert}
private_key = {key}

[client:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
"""


class KamailioTests(PeerTestCase):
    @defer.inlineCallbacks
    def kamailio(self) -> Any:
        kamailio = require_tool("kamailio")
        cert, key = self.material.write(make_leaf(self.material.ca, uris=["sip:kamailio.test"]))
        port = free_port()
        tls_cfg = os.path.join(self.material.directory, "kamailio-tls.cfg")
        with open(tls_cfg, "w") as handle:
            handle.write(KAMAILIO_TLS_CFG.format(cert=cert, key=key))
        cfg = os.path.join(self.material.directory, "kamailio.cfg")
        with open(cfg, "w") as handle:
            handle.write(KAMAILIO_CFG.format(port=port, tls_cfg=tls_cfg))
        peer = self.spawn([kamailio, "-f", cfg, "-DD", "-E", "-m", "64", "-M", "8"])
        yield self.wait_listening(port, peer)
        return peer, port

    @defer.inlineCallbacks
    def test_options_to_kamailio(self) -> Any:
        """siptls sends OPTIONS to Kamailio's TLS listener, checked as kamailio.test; 200 back."""
        _, port = yield self.kamailio()
        sender, recorder = self.client()
        connection = yield sender.send(
            options_request("sips:kamailio.test"),
            f"sips:127.0.0.1:{port}",
            server_name="kamailio.test",
        )
        yield recorder.wait_responses(1)
        self.assertEqual(recorder.responses[0][0].status, 200)
        self.assertTrue(connection.identity)

    @defer.inlineCallbacks
    def test_kamailio_relays_options_to_siptls(self) -> Any:
        """Kamailio t_relay()s an OPTIONS to siptls over its own outgoing TLS connection.

        siptls receives Kamailio's request on an inbound connection, answers 200, and
        Kamailio relays the 200 back on siptls's outgoing connection.
        """
        _, port = yield self.kamailio()
        sender, recorder = self.client()
        own = self.port_of(sender)
        uri = f"sip:relay@127.0.0.1:{own};transport=tls"
        connection = yield sender.send(
            options_request(uri), f"sips:127.0.0.1:{port}", server_name="kamailio.test"
        )
        yield recorder.wait_responses(1)
        self.assertEqual(recorder.responses[0][0].status, 200)
        self.assertIs(recorder.responses[0][1], connection)
        [(request, inbound)] = recorder.requests
        self.assertEqual(request.method, b"OPTIONS")
        self.assertEqual(inbound.direction, "in")
        self.assertIn(b"SIP/2.0/TLS 127.0.0.1:" + str(port).encode(), request.get(b"Via"))
        self.assertEqual(sorted(r.direction for r in sender.registry), ["in", "out"])
