"""Outgoing TLS: client domains, SNI, RFC 5922 identity, reuse, queues, resolution.

Two real :class:`SIPTLSService` instances talk over loopback inside the trial
reactor: a "peer" serving a chosen certificate and a "client" that sends.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer, reactor
from twisted.names import dns

from siptls.errors import IdentityError, ResolutionError, SendError
from siptls.outgoing import OutgoingProtocol, as_target, options_request
from siptls.service import SIPTLSService
from siptls.target import Target
from tests.certs import make_ca, make_leaf
from tests.interop.support import ServerTestCase, deferLater, free_port
from tests.outgoing_support import Material, Recorder
from tests.test_resolve import MemoryAuthority, dns_resolver, srv

NAME = "peer.example.test"

CLIENT_CFG = """
[server:default]
certificate = {cert}
private_key = {key}

[client:default]
verify_certificate = yes
ca_list = {ca}
{extra}
"""


class OutgoingTestCase(ServerTestCase):
    timeout = 30

    def setUp(self) -> None:
        self.material = Material(os.path.abspath(self.mktemp()))
        self.server_cert, self.server_key = self.material.leaf(dns=["client.example.test"])

    def peer(
        self, recorder: Recorder | None = None, params: dict[str, str] | None = None, **leaf: Any
    ) -> tuple[SIPTLSService, int]:
        """Start a siptls peer serving a certificate built with ``make_leaf(**leaf)``."""
        cert, key = self.material.leaf(**(leaf or {"uris": [f"sip:{NAME}"]}))
        service = self.start_server(
            {"certificate": cert, "private_key": key, **(params or {})},
            application=recorder or Recorder(),
        )
        return service, self.port_of(service)

    def client(
        self, extra: str = "", params: dict[str, str] | None = None, **kwargs: Any
    ) -> tuple[SIPTLSService, Recorder]:
        """Start the sending siptls service; ``extra`` is appended to its tls.cfg."""
        path = self.material.tls_cfg(
            CLIENT_CFG.format(cert=self.server_cert, key=self.server_key, ca="{ca}", extra=extra)
        )
        recorder = Recorder()
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        service = SIPTLSService(
            [f"tls:127.0.0.1:{free_port()}"],
            {"config": path, **(params or {})},
            recorder,
            workdir=workdir,
            reactor=reactor,
            **kwargs,
        )
        service.startService()
        self.addCleanup(self._stop, service)
        return service, recorder

    @staticmethod
    def inbound(service: SIPTLSService) -> list[Any]:
        return [r for r in service.registry if r.direction == "in"]

    @defer.inlineCallbacks
    def established_inbound(self, service: SIPTLSService, count: int = 1) -> Any:
        """The peer's inbound records once ``count`` of them finished their handshake.

        Under TLS 1.3 the client's handshake completes before the server's.
        """
        for _ in range(100):
            records = [r for r in self.inbound(service) if r.state == "established"]
            if len(records) >= count:
                return records
            yield deferLater(0.02)
        self.fail(f"{count} inbound connections did not complete their handshake")


class SendTests(OutgoingTestCase):
    @defer.inlineCallbacks
    def test_options_round_trip(self) -> Any:
        """send() connects, checks identity, writes OPTIONS; the 200 reaches responseReceived.

        The connection says direction "out", connectionOpened fired for it, and the
        peer saw our SNI.
        """
        peer, port = self.peer()
        sender, recorder = self.client()
        connection = yield sender.send(
            options_request(f"sips:{NAME}"), ("127.0.0.1", port), server_name=NAME
        )
        self.assertIsInstance(connection, OutgoingProtocol)
        self.assertEqual(connection.direction, "out")
        yield recorder.wait_responses(1)
        response, on = recorder.responses[0]
        self.assertEqual(response.status, 200)
        self.assertIs(on, connection)
        self.assertEqual(recorder.opened, [connection])
        self.assertTrue(connection.identity)
        self.assertEqual(connection.identity.identity_type, "uri")
        self.assertEqual(connection.tls.verification, "ok")
        [record] = yield self.established_inbound(peer)
        self.assertEqual(record.sni, NAME)

    @defer.inlineCallbacks
    def test_close_fires_connection_closed(self) -> Any:
        """Closing an outgoing connection calls connectionClosed with the reason."""
        peer, port = self.peer()
        sender, recorder = self.client()
        connection = yield sender.send(
            options_request("sips:x"), ("127.0.0.1", port), server_name=NAME
        )
        closed = recorder.wait_closed()
        connection.close()
        reason = yield closed
        self.assertEqual(recorder.closed[0][0], connection)
        self.assertEqual(reason, "closed locally")
        self.assertEqual(sender.outgoing.flows, {})

    @defer.inlineCallbacks
    def test_target_spellings(self) -> Any:
        """A sips: URI with IP and port, a sip:;transport=tls URI and host:port all work."""
        peer, port = self.peer(ips=["127.0.0.1"])
        sender, recorder = self.client(params={"identity_check_ip": "1"})
        for target in (
            f"sips:127.0.0.1:{port}",
            f"sip:alice@127.0.0.1:{port};transport=tls",
            f"127.0.0.1:{port}",
        ):
            yield sender.send(options_request("sips:x"), target)
        yield recorder.wait_responses(3)
        self.assertEqual(len(self.inbound(peer)), 1)

    def test_bad_target(self) -> Any:
        """A sip: URI without transport=tls fails with ResolutionError."""
        sender, _ = self.client()
        return self.assertFailure(sender.send(b"x", "sip:example.com"), ResolutionError)

    @defer.inlineCallbacks
    def test_connection_refused(self) -> Any:
        """A port nobody listens on fails the send with SendError naming the address."""
        sender, _ = self.client()
        port = free_port()
        error = yield self.assertFailure(
            sender.send(b"x", ("127.0.0.1", port), server_name=NAME), SendError
        )
        self.assertIn(f"127.0.0.1:{port}", str(error))
        self.assertEqual(sender.outgoing.flows, {})

    @defer.inlineCallbacks
    def test_unknown_ca(self) -> Any:
        """A peer certificate from another CA fails the handshake: SendError, nothing sent."""
        other = make_ca("another CA")
        cert, key = self.material.write(make_leaf(other, uris=[f"sip:{NAME}"]))
        peer = self.start_server({"certificate": cert, "private_key": key})
        sender, recorder = self.client()
        error = yield self.assertFailure(
            sender.send(
                options_request("sips:x"), ("127.0.0.1", self.port_of(peer)), server_name=NAME
            ),
            SendError,
        )
        self.assertIn("certificate verify failed", str(error))
        self.assertEqual(recorder.opened, [])
        self.assertEqual(recorder.closed, [])


class ClientDomainTests(OutgoingTestCase):
    """Each step of Kamailio's client domain selection, seen on a real connection."""

    @defer.inlineCallbacks
    def check(self, extra: str, expected: tuple[str, str], **send: Any) -> Any:
        peer, port = self.peer()
        sender, _ = self.client(extra.replace("PORT", str(port)))
        connection = yield sender.send(options_request("sips:x"), ("127.0.0.1", port), **send)
        expected = (expected[0].replace("PORT", str(port)), expected[1])
        self.assertEqual((connection.tls.domain, connection.tls.domain_reason), expected)
        return connection

    def test_server_id(self) -> Any:
        """server_id picks the domain with that server_id, even over a matching address."""
        return self.check(
            "[client:any]\nserver_name = other.test\nserver_id = carrier\n"
            "verify_certificate = yes\nca_list = {ca}\n"
            "[client:127.0.0.1:PORT]\nverify_certificate = yes\nca_list = {ca}\n",
            ("TLSc<any:other.test>", "server_id"),
            server_name=NAME,
            server_id="CARRIER",
        )

    def test_server_name_on_destination(self) -> Any:
        """A [client:IP:PORT] domain with a matching server_name is chosen by name."""
        return self.check(
            f"[client:127.0.0.1:PORT]\nserver_name = {NAME}\n"
            "verify_certificate = yes\nca_list = {ca}\n",
            ("TLSc<127.0.0.1:PORT>", "server_name"),
            server_name=NAME,
        )

    @defer.inlineCallbacks
    def test_destination(self) -> Any:
        """Without a name match, the [client:IP:PORT] of the destination is chosen."""
        peer, port = self.peer()
        sender, _ = self.client(
            f"[client:127.0.0.1:{port}]\nverify_certificate = yes\nca_list = {{ca}}\n"
        )
        connection = yield sender.send(
            options_request("sips:x"), ("127.0.0.1", port), server_name=NAME
        )
        self.assertEqual(
            (connection.tls.domain, connection.tls.domain_reason),
            (f"TLSc<127.0.0.1:{port}>", "destination"),
        )

    def test_any_by_name(self) -> Any:
        """A [client:any] domain is reached by server_name (subdomain mode 1)."""
        return self.check(
            "[client:any]\nserver_name = example.test\nserver_name_mode = 1\n"
            "verify_certificate = yes\nca_list = {ca}\n",
            ("TLSc<any:example.test>", "any"),
            server_name=NAME,
        )

    def test_default(self) -> Any:
        """With nothing else matching, [client:default] is used."""
        return self.check("", ("TLSc<default>", "default"), server_name=NAME)

    @defer.inlineCallbacks
    def test_client_certificate_presented(self) -> Any:
        """The chosen client domain's certificate is what the peer sees."""
        cert, key = self.material.leaf(common_name="carrier client", dns=["client.test"])
        peer, port = self.peer(params={"verify_client": "optional_no_ca"})
        sender, _ = self.client(
            f"[client:any]\nserver_name = {NAME}\nserver_id = carrier\ncertificate = {cert}\n"
            f"private_key = {key}\nverify_certificate = yes\nca_list = {{ca}}\n"
        )
        yield sender.send(
            options_request("sips:x"), ("127.0.0.1", port), server_id="carrier", server_name=NAME
        )
        [record] = yield self.established_inbound(peer)
        self.assertIn("carrier client", record.peer_subject)


class IdentityTests(OutgoingTestCase):
    """RFC 5922 checks of the peer certificate against the SIP domain reached."""

    @defer.inlineCallbacks
    def attempt(
        self,
        leaf: dict[str, Any],
        name: str | None = NAME,
        extra: str = "",
        params: dict[str, str] | None = None,
    ) -> Any:
        peer, port = self.peer(**leaf)
        sender, recorder = self.client(extra, params=params)
        result = yield sender.send(
            options_request("sips:x"), ("127.0.0.1", port), server_name=name
        ).addErrback(lambda f: f.value)
        return result, peer, recorder

    @defer.inlineCallbacks
    def test_uri_san(self) -> Any:
        """A URI:sip: SAN for the domain is accepted."""
        connection, _, _ = yield self.attempt({"uris": [f"sip:{NAME}:5061"]})
        self.assertEqual(connection.identity.identity_type, "uri")

    @defer.inlineCallbacks
    def test_dns_san(self) -> Any:
        """A DNS SAN for the domain is accepted."""
        connection, _, _ = yield self.attempt({"dns": [NAME.upper()]})
        self.assertEqual(connection.identity.identity_type, "dns")

    @defer.inlineCallbacks
    def test_cn_only(self) -> Any:
        """A certificate with no SAN extension is judged by its CN."""
        connection, _, _ = yield self.attempt({"common_name": NAME})
        self.assertEqual(connection.identity.identity_type, "cn")

    @defer.inlineCallbacks
    def test_wrong_name_refused(self) -> Any:
        """A certificate for another name fails the send with IdentityError; no events fire."""
        error, peer, recorder = yield self.attempt(
            {"uris": ["sip:other.example.test"], "dns": ["other.example.test"]}
        )
        self.assertIsInstance(error, IdentityError)
        self.assertIn(NAME, str(error))
        self.assertEqual(error.reference, NAME)
        self.assertEqual((recorder.opened, recorder.closed), ([], []))
        yield deferLater(0.05)
        self.assertEqual(recorder.requests, [])
        self.assertEqual(peer.registry.handshakes_ok, 0)

    @defer.inlineCallbacks
    def test_cn_ignored_when_san_present(self) -> Any:
        """A matching CN does not help a certificate whose SANs name another host."""
        error, _, _ = yield self.attempt({"common_name": NAME, "dns": ["other.test"]})
        self.assertIsInstance(error, IdentityError)

    @defer.inlineCallbacks
    def test_wildcard_needs_opt_in(self) -> Any:
        """*.example.test is refused by default and accepted with identity_wildcards."""
        error, _, _ = yield self.attempt({"dns": ["*.example.test"]})
        self.assertIsInstance(error, IdentityError)
        self.assertIn("wildcard", str(error))
        connection, _, _ = yield self.attempt(
            {"dns": ["*.example.test"]},
            extra=f"[client:any]\nserver_name = {NAME}\nverify_certificate = yes\n"
            "ca_list = {ca}\nidentity_wildcards = yes\n",
        )
        self.assertTrue(connection.identity)

    @defer.inlineCallbacks
    def test_verify_identity_off(self) -> Any:
        """verify_identity = no on the client domain checks the chain only."""
        connection, _, _ = yield self.attempt(
            {"dns": ["other.test"]},
            extra=f"[client:any]\nserver_name = {NAME}\nverify_certificate = yes\n"
            "ca_list = {ca}\nverify_identity = no\n",
        )
        self.assertIsNone(connection.identity)
        self.assertEqual(connection.tls.verification, "ok")

    @defer.inlineCallbacks
    def test_ip_literal_unchecked_by_default(self) -> Any:
        """An IP destination without server_name: chain only when identity_check_ip is off."""
        connection, _, _ = yield self.attempt({"dns": ["other.test"]}, name=None)
        self.assertIsNone(connection.identity)
        self.assertIsNone(connection.tls.server_name)

    @defer.inlineCallbacks
    def test_ip_literal_checked_against_ip_sans(self) -> Any:
        """With identity_check_ip, an IP destination needs an IP SAN for that address."""
        error, _, _ = yield self.attempt(
            {"dns": ["127.0.0.1"]}, name=None, params={"identity_check_ip": "1"}
        )
        self.assertIsInstance(error, IdentityError)
        connection, _, _ = yield self.attempt(
            {"ips": ["127.0.0.1"]}, name=None, params={"identity_check_ip": "1"}
        )
        self.assertEqual(connection.identity.identity_type, "ip")


class ReuseTests(OutgoingTestCase):
    @defer.inlineCallbacks
    def test_two_sends_one_connection(self) -> Any:
        """Two sends to the same destination, domain and name share one connection."""
        peer, port = self.peer()
        sender, recorder = self.client()
        first = yield sender.send(
            options_request("sips:x", cseq=1), ("127.0.0.1", port), server_name=NAME
        )
        second = yield sender.send(
            options_request("sips:x", cseq=2), ("127.0.0.1", port), server_name=NAME
        )
        self.assertIs(first, second)
        yield recorder.wait_responses(2)
        self.assertEqual(len(self.inbound(peer)), 1)
        self.assertEqual(sender.registry.opened_total, 1)

    @defer.inlineCallbacks
    def test_sends_before_handshake_queued_in_order(self) -> Any:
        """Sends made while the flow connects are queued and delivered in order."""
        peer_app = Recorder()
        peer, port = self.peer(peer_app)
        sender, recorder = self.client()
        sends = [
            sender.send(options_request("sips:x", cseq=n), ("127.0.0.1", port), server_name=NAME)
            for n in range(1, 6)
        ]
        connections = yield defer.gatherResults(sends)
        self.assertEqual(len({id(c) for c in connections}), 1)
        yield recorder.wait_responses(5)
        self.assertEqual(
            [r.cseq for r, _ in peer_app.requests], [(n, b"OPTIONS") for n in range(1, 6)]
        )
        self.assertEqual(len(self.inbound(peer)), 1)

    @defer.inlineCallbacks
    def test_other_name_other_connection(self) -> Any:
        """A different server name (another SNI and identity) opens another connection."""
        peer, port = self.peer(uris=[f"sip:{NAME}", "sip:second.example.test"])
        sender, _ = self.client()
        first = yield sender.send(options_request("sips:x"), ("127.0.0.1", port), server_name=NAME)
        second = yield sender.send(
            options_request("sips:x"), ("127.0.0.1", port), server_name="second.example.test"
        )
        self.assertIsNot(first, second)
        records = yield self.established_inbound(peer, 2)
        self.assertEqual(sorted(r.sni for r in records), [NAME, "second.example.test"])

    @defer.inlineCallbacks
    def test_inbound_connection_not_reused(self) -> Any:
        """A connection the peer opened to us is not used to send to the peer's address."""
        peer, port = self.peer()
        sender, _ = self.client()
        connection = yield sender.send(
            options_request("sips:x"), ("127.0.0.1", port), server_name=NAME
        )
        [inbound] = self.inbound(peer)
        back = inbound.remote
        self.assertEqual(back, connection.local)
        self.assertEqual(peer.outgoing.flows, {})

    @defer.inlineCallbacks
    def test_queue_limit(self) -> Any:
        """A message larger than con_ct_wq_max before the handshake fails with SendError."""
        peer, port = self.peer()
        sender, _ = self.client(params={"con_ct_wq_max": "200"})
        error = yield self.assertFailure(
            sender.send(b"x" * 300, ("127.0.0.1", port), server_name=NAME), SendError
        )
        self.assertIn("con_ct_wq_max", str(error))


class KeepAliveTests(OutgoingTestCase):
    @defer.inlineCallbacks
    def test_pings_answered(self) -> Any:
        """With keepalive_interval, the flow pings; siptls answers each ping with a pong."""
        peer, port = self.peer()
        sender, recorder = self.client(
            params={"keepalive_interval": "0.1", "keepalive_timeout": "1"}
        )
        connection = yield sender.send(
            options_request("sips:x"), ("127.0.0.1", port), server_name=NAME
        )
        for _ in range(100):
            if connection.pongs_received >= 3:
                break
            yield deferLater(0.02)
        self.assertGreaterEqual(connection.pongs_received, 3)
        self.assertEqual(recorder.closed, [])
        self.assertIsNotNone(connection.transport)

    @defer.inlineCallbacks
    def test_off_by_default(self) -> Any:
        """Without keepalive_interval no ping is sent."""
        peer, port = self.peer()
        sender, _ = self.client()
        connection = yield sender.send(
            options_request("sips:x"), ("127.0.0.1", port), server_name=NAME
        )
        yield deferLater(0.2)
        self.assertEqual(connection.pings_sent, 0)


class ResolutionTests(OutgoingTestCase):
    def dns_server(self, records: dict[str, list[Any]]) -> Any:
        """A DNS server on loopback answering from ``records``; returns a client resolver."""
        return dns_resolver(self, MemoryAuthority(records))

    @defer.inlineCallbacks
    def test_srv_target(self) -> Any:
        """sips:domain resolves through SRV; SNI and identity use the domain, not the SRV host."""
        peer, port = self.peer(uris=["sip:example.test"])
        resolver = self.dns_server(
            {
                "_sips._tcp.example.test": [srv(10, 0, port, "sip1.provider.test")],
                "sip1.provider.test": [dns.Record_A("127.0.0.1")],
            }
        )
        sender, recorder = self.client(resolver=resolver)
        connection = yield sender.send(options_request("sips:example.test"), "sips:example.test")
        self.assertEqual(connection.remote, ("127.0.0.1", port))
        self.assertEqual(connection.identity.reference, "example.test")
        [record] = yield self.established_inbound(peer)
        self.assertEqual(record.sni, "example.test")
        yield recorder.wait_responses(1)

    @defer.inlineCallbacks
    def test_explicit_port_uses_a_record(self) -> Any:
        """With a port in the URI, the host's A record is used and SRV is not asked."""
        peer, port = self.peer(uris=["sip:example.test"])
        resolver = self.dns_server({"example.test": [dns.Record_A("127.0.0.1")]})
        sender, _ = self.client(resolver=resolver)
        connection = yield sender.send(options_request("sips:x"), f"sips:example.test:{port}")
        self.assertEqual(connection.remote, ("127.0.0.1", port))

    @defer.inlineCallbacks
    def test_next_address_after_refusal(self) -> Any:
        """When the first SRV target refuses TCP, the next one is tried."""
        peer, port = self.peer(uris=["sip:example.test"])
        dead = free_port()
        resolver = self.dns_server(
            {
                "_sips._tcp.example.test": [
                    srv(10, 0, dead, "dead.example.test"),
                    srv(20, 0, port, "live.example.test"),
                ],
                "dead.example.test": [dns.Record_A("127.0.0.1")],
                "live.example.test": [dns.Record_A("127.0.0.1")],
            }
        )
        sender, _ = self.client(resolver=resolver)
        connection = yield sender.send(options_request("sips:x"), "sips:example.test")
        self.assertEqual(connection.remote, ("127.0.0.1", port))


class TargetSpellingTests(ServerTestCase):
    def test_as_target(self) -> None:
        """(host, port) pairs become Targets; IPs carry no server name."""
        self.assertEqual(
            as_target(("Example.TEST", 5070)), Target("example.test", 5070, False, "example.test")
        )
        self.assertEqual(as_target(("::1", 5061)), Target("::1", 5061, True, None))
