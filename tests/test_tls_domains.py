"""TLS domains end to end in memory: tls.cfg -> contexts -> real handshakes.

Selection by local IP:port and SNI (with server_name_mode), sni_strict, the
verify settings an SNI switch must bring along, load-time errors found by
the OpenSSL layer, private_key_password, and keylog_file.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from siptls.application import OptionsResponder
from siptls.errors import ConfigError
from siptls.service import SIPTLSService
from tests.domainkit import (
    RawClient,
    TestPKI,
    common_name,
    load_generation,
    remember_protocols,
    write_cfg,
)
from tests.tlsloop import RecordingClient, Server

LISTEN = [("127.0.0.1", 5061), ("127.0.0.2", 5061)]

SELECTION_CFG = """\
[server:default]
certificate = default.pem
private_key = default.key

[server:127.0.0.1:5061]
certificate = ip1-a.pem
private_key = ip1-a.key
server_name = a.example.com
server_name_mode = 0

[server:127.0.0.1:5061]
certificate = ip1-b.pem
private_key = ip1-b.key
server_name = b.example.com
server_name_mode = 1

[server:127.0.0.2:5061]
certificate = ip2.pem
private_key = ip2.key
server_name = c.example.com
server_name_mode = 2

[server:any]
certificate = any-net.pem
private_key = any-net.key
server_name = example.net
server_name_mode = 1

[server:any]
certificate = any-org.pem
private_key = any-org.key
server_name = example.org
server_name_mode = 2
"""

SERVER_STEMS = ("default", "ip1-a", "ip1-b", "ip2", "any-net", "any-org")

# (local IP, SNI) -> (certificate CN, domain reason)
SELECTION_CASES: dict[tuple[str, str | None], tuple[str, str]] = {
    ("127.0.0.1", None): ("ip1-a", "socket"),
    ("127.0.0.1", "a.example.com"): ("ip1-a", "server_name"),
    ("127.0.0.1", "A.Example.COM"): ("ip1-a", "server_name"),
    ("127.0.0.1", "b.example.com"): ("ip1-b", "server_name"),
    ("127.0.0.1", "x.y.B.example.com"): ("ip1-b", "server_name"),
    # mode 0 is exact: a subdomain of a.example.com is unknown, the socket's domain stays.
    ("127.0.0.1", "x.a.example.com"): ("ip1-a", "socket"),
    ("127.0.0.1", "example.net"): ("any-net", "any"),
    ("127.0.0.1", "deep.sub.EXAMPLE.net"): ("any-net", "any"),
    # mode 2: subdomains only, not the apex.
    ("127.0.0.1", "example.org"): ("ip1-a", "socket"),
    ("127.0.0.1", "www.example.org"): ("any-org", "any"),
    ("127.0.0.1", "nope.invalid"): ("ip1-a", "socket"),
    ("127.0.0.2", None): ("ip2", "socket"),
    ("127.0.0.2", "c.example.com"): ("ip2", "socket"),
    ("127.0.0.2", "x.c.example.com"): ("ip2", "server_name"),
    # Names of another socket's domains are not reachable from this one.
    ("127.0.0.2", "a.example.com"): ("ip2", "socket"),
    ("127.0.0.2", "www.example.org"): ("any-org", "any"),
    ("127.0.0.3", None): ("default", "default"),
    ("127.0.0.3", "a.example.com"): ("default", "default"),
    ("127.0.0.3", "sip.example.net"): ("any-net", "any"),
}


class LogCapture:
    """Collects formatted log events while installed."""

    def __init__(self, test: SynchronousTestCase) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        test.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def text(self) -> list[str]:
        return [formatEvent(event) for event in self.events]


class DomainTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        self.pki = TestPKI(self.dir)

    def server(self, cfg: str | None, params: dict[str, str] | None = None) -> Server:
        generation = load_generation(self.dir, cfg, LISTEN, params)
        server = Server(generation, OptionsResponder())
        self.built = remember_protocols(server)
        return server

    def handshake(
        self, server: Server, client: RawClient, local: str = "127.0.0.1"
    ) -> tuple[Any, Any]:
        """Run one in-memory handshake; (client TLS protocol, server SIP protocol)."""
        self.client = RecordingClient()
        client_tls, _server_tls, pump = server.connect(client, self.client, local=(local, 5061))
        pump.flush()
        return client_tls, self.built[-1]


class SelectionTests(DomainTestCase):
    def test_selection_by_socket_and_sni(self) -> None:
        """Each (local IP, SNI) pair gets the certificate and domain the tls.cfg names."""
        for stem in SERVER_STEMS:
            self.pki.server(stem)
        server = self.server(SELECTION_CFG)
        seen = {}
        for (local, sni), _expected in SELECTION_CASES.items():
            client_tls, protocol = self.handshake(server, RawClient(sni), local)
            certificate = client_tls.getHandle().get_peer_certificate(as_cryptography=True)
            seen[(local, sni)] = (common_name(certificate), protocol.tls.domain_reason)
            self.assertEqual(protocol.tls.local.subject_component("CN"), [seen[(local, sni)][0]])
        self.assertEqual(seen, SELECTION_CASES)

    def test_domain_ids_in_registry(self) -> None:
        """The registry record names the chosen domain by Kamailio's id and the SNI sent."""
        for stem in SERVER_STEMS:
            self.pki.server(stem)
        server = self.server(SELECTION_CFG)
        _, protocol = self.handshake(server, RawClient("www.example.org"), "127.0.0.2")
        self.assertEqual(protocol.record.domain, "TLSs<any:example.org>")
        self.assertEqual(protocol.record.sni, "www.example.org")
        _, protocol = self.handshake(server, RawClient(None), "127.0.0.2")
        self.assertEqual(protocol.record.domain, "TLSs<127.0.0.2:5061>")
        self.assertIsNone(protocol.record.sni)

    def test_sni_strict_refuses_unknown_names(self) -> None:
        """With sni_strict=yes an unknown name fails the handshake with unrecognized_name;
        known names and no SNI still work."""
        for stem in SERVER_STEMS:
            self.pki.server(stem)
        server = self.server(SELECTION_CFG, {"sni_strict": "yes"})
        capture = LogCapture(self)
        client_tls, protocol = self.handshake(server, RawClient("nope.invalid"))
        self.assertIsNone(protocol.tls)
        lost = self.client.lost
        self.assertIn("unrecognized name", str(lost.value))
        self.assertTrue(any("Refused server name 'nope.invalid'" in t for t in capture.text()))
        _, protocol = self.handshake(server, RawClient("b.example.com"))
        self.assertEqual(protocol.tls.domain, "TLSs<127.0.0.1:5061>")
        _, protocol = self.handshake(server, RawClient(None))
        self.assertIsNotNone(protocol.tls)


SWITCH_CFG = """\
[server:default]
certificate = default.pem
private_key = default.key

[server:127.0.0.1:5061]
certificate = open.pem
private_key = open.key
server_name = open.example.com
verify_client = off

[server:127.0.0.2:5061]
certificate = shallow.pem
private_key = shallow.key
server_name = shallow.example.com
verify_client = on
ca_list = ca.pem
verify_depth = 1

[server:any]
certificate = secure.pem
private_key = secure.key
server_name = secure.example.com
verify_client = on
ca_list = ca.pem

[server:any]
certificate = strict.pem
private_key = strict.key
server_name = strict.example.com
verify_client = on
ca_list = ca.pem
verify_depth = 1
"""


class SNISwitchTests(DomainTestCase):
    """pyOpenSSL's set_context keeps the first context's verify mode and depth;
    the SNI domain's must apply."""

    def setUp(self) -> None:
        super().setUp()
        for stem in ("default", "open", "shallow", "secure", "strict"):
            self.pki.server(stem)
        self.tls = self.server(SWITCH_CFG)

    def test_switch_to_verifying_domain_demands_certificate(self) -> None:
        """Socket domain verify off, SNI domain verify_client=on: no client certificate fails,
        a valid one is verified; without SNI no certificate is asked for."""
        capture = LogCapture(self)
        _, protocol = self.handshake(self.tls, RawClient("secure.example.com"))
        self.assertIsNone(protocol.tls)
        self.assertTrue(any("no certificate" in t for t in capture.text()), capture.text())
        valid = self.pki.clients["valid"]
        _, protocol = self.handshake(self.tls, RawClient("secure.example.com", valid))
        self.assertEqual(protocol.tls.domain, "TLSs<any:secure.example.com>")
        self.assertTrue(protocol.tls.is_peer_verified())
        _, protocol = self.handshake(self.tls, RawClient(None, valid))
        self.assertEqual(protocol.tls.domain, "TLSs<127.0.0.1:5061>")
        self.assertIsNone(protocol.tls.peer)  # verify off: no certificate requested

    def test_switch_applies_smaller_depth(self) -> None:
        """An SNI domain with verify_depth=1 refuses a chain with two intermediates,
        although the socket domain it came from did not check at all."""
        deep = self.pki.clients["deep"]
        capture = LogCapture(self)
        _, protocol = self.handshake(self.tls, RawClient("strict.example.com", deep))
        self.assertIsNone(protocol.tls)
        self.assertTrue(any("chain too long" in t for t in capture.text()), capture.text())
        _, protocol = self.handshake(self.tls, RawClient("secure.example.com", deep))
        self.assertTrue(protocol.tls.is_peer_verified())

    def test_switch_applies_larger_depth(self) -> None:
        """From a socket domain with verify_depth=1, SNI to a domain with depth 9 accepts
        the deep chain the socket domain alone refuses."""
        deep = self.pki.clients["deep"]
        _, protocol = self.handshake(self.tls, RawClient(None, deep), "127.0.0.2")
        self.assertIsNone(protocol.tls)
        _, protocol = self.handshake(self.tls, RawClient("secure.example.com", deep), "127.0.0.2")
        self.assertEqual(protocol.tls.domain, "TLSs<any:secure.example.com>")
        self.assertTrue(protocol.tls.is_peer_verified())


class LoadErrorTests(DomainTestCase):
    """Errors only the OpenSSL layer finds are one line naming file, line and key."""

    def assertLoadError(
        self, body: str, line: int, key: str, *fragments: str, params: dict[str, str] | None = None
    ) -> ConfigError:
        cfg = "[server:default]\n" + body
        error = self.assertRaises(ConfigError, load_generation, self.dir, cfg, LISTEN, params)
        message = str(error)
        self.assertNotIn("\n", message)
        self.assertTrue(message.startswith(f"tls.cfg:{line}: [server:default] {key}"), message)
        self.assertEqual((error.source, error.line, error.key), ("tls.cfg", line, key))
        for fragment in fragments:
            self.assertIn(fragment, message)
        return error

    def test_key_does_not_match_certificate(self) -> None:
        """A private key of another certificate is refused at its line."""
        self.pki.server("one")
        self.pki.server("two")
        self.assertLoadError(
            "certificate = one.pem\nprivate_key = two.key\n",
            3,
            "private_key",
            "does not match",
            "two.key",
        )

    def test_wrong_password(self) -> None:
        """A wrong private_key_password is refused at the password's line, without showing it."""
        self.pki.server("enc", password=b"right horse")
        error = self.assertLoadError(
            "certificate = enc.pem\nprivate_key = enc.key\nprivate_key_password = wrong-battery\n",
            4,
            "private_key_password",
            "does not decrypt",
        )
        self.assertNotIn("wrong-battery", str(error))

    def test_encrypted_key_without_password(self) -> None:
        """An encrypted key with no password is refused at the key's line (no TTY prompt)."""
        self.pki.server("enc", password=b"right horse")
        self.assertLoadError(
            "certificate = enc.pem\nprivate_key = enc.key\n",
            3,
            "private_key",
            "encrypted",
            "no private_key_password",
        )

    def test_unparsable_crl(self) -> None:
        """A crl file that holds no PEM CRL is refused at the crl line."""
        self.pki.server("one")
        self.pki.write(
            "bad-crl.pem", b"-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n"
        )
        self.assertLoadError(
            "certificate = one.pem\nprivate_key = one.key\nca_list = ca.pem\ncrl = bad-crl.pem\n",
            5,
            "crl",
            "bad-crl.pem",
        )

    def test_unparsable_certificate(self) -> None:
        """A certificate file that is not PEM is refused at the certificate line."""
        self.pki.server("one")
        self.pki.write("junk.pem", b"this is not a certificate\n")
        self.assertLoadError(
            "certificate = junk.pem\nprivate_key = one.key\n",
            2,
            "certificate",
            "junk.pem",
        )

    def test_bad_cipher_list(self) -> None:
        """A cipher_list OpenSSL matches nothing from is refused at its line, for TLS 1.2
        cipher strings and for TLS 1.3 suites (method TLSv1.3)."""
        self.pki.server("one")
        self.assertLoadError(
            "certificate = one.pem\nprivate_key = one.key\ncipher_list = NOT-A-CIPHER\n",
            4,
            "cipher_list",
            "NOT-A-CIPHER",
        )
        self.assertLoadError(
            "certificate = one.pem\nprivate_key = one.key\nmethod = TLSv1.3\n"
            "cipher_list = ECDHE-ECDSA-AES128-GCM-SHA256\n",
            5,
            "cipher_list",
            "ECDHE-ECDSA-AES128-GCM-SHA256",
        )

    def test_password_used_from_cfg_and_param(self) -> None:
        """private_key_password decrypts the key in tls.cfg and as a module parameter,
        and appears in no log event, notice or option listing."""
        certificate, key = self.pki.server("enc", password=b"s3cret-pw")
        capture = LogCapture(self)
        cfg = "[server:default]\ncertificate = enc.pem\nprivate_key = enc.key\n"
        cfg += "private_key_password = s3cret-pw\n"
        server = self.server(cfg)
        _, protocol = self.handshake(server, RawClient(None))
        self.assertEqual(protocol.tls.local.subject_component("CN"), ["enc"])
        params = {
            "certificate": certificate,
            "private_key": key,
            "private_key_password": "s3cret-pw",
        }
        server = self.server(None, params)
        _, protocol = self.handshake(server, RawClient(None))
        self.assertEqual(protocol.tls.local.subject_component("CN"), ["enc"])
        service = SIPTLSService(["tls:127.0.0.1:5061"], params, workdir=self.dir)
        from siptls.service import ServiceControl

        shown = repr(ServiceControl(service).options()) + repr(service.notices())
        shown += repr(service.config) + repr(service.generation.domains)
        self.assertNotIn("s3cret-pw", shown)
        self.assertNotIn("s3cret-pw", repr(capture.events) + repr(capture.text()))


class KeyLogTests(DomainTestCase):
    def test_keylog_file(self) -> None:
        """keylog_file gets NSS key-log lines after a handshake, is mode 0600, and the
        service warns about it loudly."""
        certificate, key = self.pki.server("one")
        path = os.path.join(self.dir, "keys.log")
        params = {"certificate": certificate, "private_key": key, "keylog_file": path}
        server = self.server(None, params)
        self.handshake(server, RawClient(None, max_version="1.2"))
        self.handshake(server, RawClient(None))
        with open(path) as handle:
            lines = handle.read().splitlines()
        labels = {line.split(" ")[0] for line in lines}
        self.assertIn("CLIENT_RANDOM", labels)  # TLS 1.2
        self.assertIn("SERVER_TRAFFIC_SECRET_0", labels)  # TLS 1.3
        self.assertTrue(all(len(line.split(" ")) == 3 for line in lines), lines)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        service = SIPTLSService(["tls:127.0.0.1:5061"], params, workdir=self.dir)
        notes = [n for n in service.notices() if "keylog_file" in n]
        self.assertEqual(len(notes), 1)
        self.assertIn(path, notes[0])
        self.assertIn("decrypt", notes[0])

    def test_keylog_file_existing_mode_tightened(self) -> None:
        """An existing key-log file readable by others is made 0600 and appended to."""
        certificate, key = self.pki.server("one")
        path = write_cfg(self.dir, "# old line\n", "keys.log")
        os.chmod(path, 0o644)
        server = self.server(
            None, {"certificate": certificate, "private_key": key, "keylog_file": path}
        )
        self.handshake(server, RawClient(None))
        with open(path) as handle:
            content = handle.read()
        self.assertTrue(content.startswith("# old line\n"))
        self.assertIn("_TRAFFIC_SECRET", content)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
