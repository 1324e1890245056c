"""Client-certificate verification per Kamailio's table (reference section 4.1),
in memory, and the per-connection TLS facts (the ``$tls_*`` equivalents).

Every domain here checks CRLs (``crl`` holds one CRL per CA level, as
CRL_CHECK_ALL needs) and has ``verify_depth = 1``: the ``valid`` chain
(leaf, int1, root) fits, the ``deep`` one (leaf, int2, int1, root) does not.
"""

from __future__ import annotations

import datetime

from siptls.contexts import X509_V_ERR_CERT_CHAIN_TOO_LONG
from tests.domainkit import RawClient, common_name
from tests.test_tls_domains import DomainTestCase, LogCapture

SCENARIOS = ("valid", "deep", "unknown_ca", "expired", "future", "revoked", "self_signed", "none")

# Words the log line of a refused handshake must contain, per scenario.
REASONS = {
    "deep": "certificate chain too long",
    "unknown_ca": "unable to get local issuer certificate",
    "expired": "certificate has expired",
    "future": "certificate is not yet valid",
    "revoked": "certificate revoked",
    "self_signed": "self-signed certificate",
    "none": "no certificate",
}

# OpenSSL X509_V_ERR_* each scenario must record under optional_no_ca.
ERRNOS = {
    "deep": X509_V_ERR_CERT_CHAIN_TOO_LONG,
    "unknown_ca": 20,
    "expired": 10,
    "future": 9,
    "revoked": 23,
    "self_signed": 18,
}

ACCEPT_ALL = frozenset(SCENARIOS)
ACCEPT_VALID = frozenset({"valid"})
ACCEPT_VALID_OR_NONE = frozenset({"valid", "none"})


class VerificationMatrixTests(DomainTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.pki.server("server")

    def run_matrix(self, settings: str, accepted: frozenset[str], requested: bool = True) -> None:
        """Handshake every scenario against a domain with ``settings``; compare verdicts."""
        cfg = (
            "[server:default]\ncertificate = server.pem\nprivate_key = server.key\n"
            "ca_list = ca.pem\ncrl = crl.pem\nverify_depth = 1\n" + settings
        )
        server = self.server(cfg)
        verdicts = {}
        logs = {}
        for name in SCENARIOS:
            capture = LogCapture(self)
            _, protocol = self.handshake(server, RawClient(None, self.pki.clients[name]))
            verdicts[name] = protocol.tls is not None
            logs[name] = " ".join(t for t in capture.text() if "handshake" in t)
            if protocol.tls is not None:
                # The certificate is seen only when one is requested and sent.
                self.assertEqual(protocol.tls.peer is not None, requested and name != "none", name)
        self.assertEqual(verdicts, {name: name in accepted for name in SCENARIOS})
        for name in SCENARIOS:
            if name not in accepted:
                self.assertIn(f"failed: {REASONS[name]}", logs[name])

    def test_off(self) -> None:
        """verify_client = off: no certificate is requested, everything is accepted."""
        self.run_matrix("verify_client = off\n", ACCEPT_ALL, requested=False)

    def test_booleans_off(self) -> None:
        """verify_certificate = no, require_certificate = no: the same as off."""
        self.run_matrix(
            "verify_certificate = no\nrequire_certificate = no\n", ACCEPT_ALL, requested=False
        )

    def test_on(self) -> None:
        """verify_client = on: only a certificate that verifies is accepted; none is refused."""
        self.run_matrix("verify_client = on\n", ACCEPT_VALID)

    def test_verify_and_require(self) -> None:
        """verify_certificate = yes, require_certificate = yes: the same as on."""
        self.run_matrix("verify_certificate = yes\nrequire_certificate = yes\n", ACCEPT_VALID)

    def test_require_implies_verify(self) -> None:
        """require_certificate = yes alone also verifies (Kamailio's code, not its docs)."""
        self.run_matrix("require_certificate = yes\n", ACCEPT_VALID)

    def test_optional(self) -> None:
        """verify_client = optional: no certificate is fine, a bad one is refused."""
        self.run_matrix("verify_client = optional\n", ACCEPT_VALID_OR_NONE)

    def test_verify_only(self) -> None:
        """verify_certificate = yes alone: the same as optional."""
        self.run_matrix("verify_certificate = yes\n", ACCEPT_VALID_OR_NONE)

    def test_booleans_or_verify_client(self) -> None:
        """verify_client = optional OR-ed with require_certificate = yes acts as on."""
        self.run_matrix("verify_client = optional\nrequire_certificate = yes\n", ACCEPT_VALID)

    def test_optional_no_ca_records_real_verdict(self) -> None:
        """verify_client = optional_no_ca accepts anything but records the real verdict on
        TLSInfo, its flags and the registry record's ``verification``."""
        self.run_matrix("verify_client = optional_no_ca\n", ACCEPT_ALL)
        for name in SCENARIOS:
            _, protocol = self.handshake(
                self.server_again(), RawClient(None, self.pki.clients[name])
            )
            tls = protocol.tls
            errnos = {errno for _, errno in tls.verify_errors}
            if name == "valid":
                self.assertEqual((tls.verification, tls.is_peer_verified()), ("ok", True))
            elif name == "none":
                self.assertEqual((tls.verification, tls.is_peer_verified()), ("none", False))
            else:
                self.assertIn(ERRNOS[name], errnos, name)
                self.assertFalse(tls.is_peer_verified(), name)
                self.assertIn(REASONS[name], tls.verification)
            self.assertEqual(protocol.record.verification, tls.verification)
            self.assertEqual(tls.peer_expired, name == "expired", name)
            self.assertEqual(tls.peer_not_yet_valid, name == "future", name)
            self.assertEqual(tls.peer_revoked, name == "revoked", name)
            self.assertEqual(tls.peer_self_signed, name == "self_signed", name)

    def server_again(self):  # type: ignore[no-untyped-def]
        if not hasattr(self, "_no_ca_server"):
            cfg = (
                "[server:default]\ncertificate = server.pem\nprivate_key = server.key\n"
                "ca_list = ca.pem\ncrl = crl.pem\nverify_depth = 1\n"
                "verify_client = optional_no_ca\n"
            )
            self._no_ca_server = self.server(cfg)
        return self._no_ca_server


class CRLAndDepthTests(DomainTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.pki.server("server")

    def test_crl_needed_for_every_level(self) -> None:
        """With only the root's CRL, CRL_CHECK_ALL refuses even a valid chain
        ("unable to get certificate CRL"); with both levels it is accepted."""
        base = (
            "[server:default]\ncertificate = server.pem\nprivate_key = server.key\n"
            "ca_list = ca.pem\nverify_client = on\n"
        )
        valid = self.pki.clients["valid"]
        capture = LogCapture(self)
        server = self.server(base + "crl = root-crl.pem\n")
        _, protocol = self.handshake(server, RawClient(None, valid))
        self.assertIsNone(protocol.tls)
        self.assertTrue(
            any("unable to get certificate CRL" in t for t in capture.text()), capture.text()
        )
        server = self.server(base + "crl = crl.pem\n")
        _, protocol = self.handshake(server, RawClient(None, valid))
        self.assertTrue(protocol.tls.is_peer_verified())

    def test_default_depth_takes_deep_chain(self) -> None:
        """With the default verify_depth (9) the two-intermediate chain verifies."""
        cfg = (
            "[server:default]\ncertificate = server.pem\nprivate_key = server.key\n"
            "ca_list = ca.pem\ncrl = crl.pem\nverify_client = on\n"
        )
        server = self.server(cfg)
        _, protocol = self.handshake(server, RawClient(None, self.pki.clients["deep"]))
        self.assertTrue(protocol.tls.is_peer_verified())

    def test_no_system_trust(self) -> None:
        """With verify_client = on and no ca_list nothing verifies (no system CAs)."""
        cfg = (
            "[server:default]\ncertificate = server.pem\nprivate_key = server.key\n"
            "verify_client = on\n"
        )
        server = self.server(cfg)
        _, protocol = self.handshake(server, RawClient(None, self.pki.clients["valid"]))
        self.assertIsNone(protocol.tls)


class TLSFactsTests(DomainTestCase):
    def test_facts_of_known_client_certificate(self) -> None:
        """TLSInfo/CertificateFacts give version, cipher and bits, SNI, domain and reason,
        peer and local subject/issuer (whole and by component), serial, validity, SANs by
        type, and the verdict flags, for a known generated client certificate."""
        self.pki.server("local server")
        cfg = (
            (
                "[server:default]\ncertificate = local server.pem\nprivate_key = local server.key\n"
                "[server:any]\ncertificate = local server.pem\nprivate_key = local server.key\n"
                "server_name = example.com\nserver_name_mode = 1\n"
                "ca_list = ca.pem\ncrl = crl.pem\nverify_client = on\n"
            )
            .replace("local server.pem", '"local server.pem"')
            .replace("local server.key", '"local server.key"')
        )
        server = self.server(cfg)
        client = self.pki.clients["valid"]
        assert client is not None
        _, protocol = self.handshake(
            server, RawClient("sip.example.com", client, max_version="1.2")
        )
        tls = protocol.tls
        self.assertEqual(tls.version, "TLSv1.2")
        self.assertEqual(tls.cipher, "ECDHE-ECDSA-AES256-GCM-SHA384")
        self.assertEqual(tls.cipher_bits, 256)
        self.assertEqual(tls.server_name, "sip.example.com")
        self.assertEqual((tls.domain, tls.domain_reason), ("TLSs<any:example.com>", "any"))
        peer = tls.peer
        self.assertEqual(peer.subject, "CN=alice,O=siptls tests")
        self.assertEqual(peer.subject_component("CN"), ["alice"])
        self.assertEqual(peer.subject_component("o"), ["siptls tests"])
        self.assertEqual(peer.subject_component("OU"), [])
        self.assertEqual(peer.issuer, "CN=siptls test int1,O=siptls tests")
        self.assertEqual(peer.issuer_component("CN"), ["siptls test int1"])
        self.assertEqual(peer.serial, format(client.cert.serial_number, "X"))
        self.assertEqual(peer.not_before, client.cert.not_valid_before_utc)
        self.assertEqual(peer.not_after, client.cert.not_valid_after_utc)
        self.assertIsInstance(peer.not_after, datetime.datetime)
        self.assertEqual(
            peer.sans,
            {
                "dns": ["alice.example.com"],
                "uri": ["sip:alice@example.com"],
                "email": ["alice@example.com"],
                "ip": ["192.0.2.7"],
            },
        )
        self.assertFalse(peer.self_signed)
        self.assertFalse(peer.expired())
        self.assertFalse(peer.not_yet_valid())
        self.assertTrue(tls.is_peer_verified())
        self.assertEqual(tls.verification, "ok")
        self.assertFalse(tls.peer_expired or tls.peer_revoked or tls.peer_self_signed)
        local = tls.local
        self.assertEqual(local.subject_component("CN"), ["local server"])
        self.assertEqual(local.issuer_component("CN"), ["siptls test int1"])
        self.assertEqual(
            local.serial, format(self.pki.issued("local server").cert.serial_number, "X")
        )
        record = protocol.record
        self.assertEqual(
            (record.tls_version, record.cipher, record.cipher_bits, record.sni),
            ("TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384", 256, "sip.example.com"),
        )
        self.assertEqual(
            (record.peer_subject, record.peer_issuer, record.peer_serial),
            (peer.subject, peer.issuer, peer.serial),
        )
        self.assertEqual(record.peer_not_after, peer.not_after.isoformat())

    def test_tls13_facts(self) -> None:
        """A TLS 1.3 handshake reports TLSv1.3, a TLS 1.3 suite with its bits, and no SNI
        when none was sent."""
        self.pki.server("server")
        server = self.server(
            "[server:default]\ncertificate = server.pem\nprivate_key = server.key\n"
        )
        client_tls, protocol = self.handshake(server, RawClient(None))
        tls = protocol.tls
        self.assertEqual(tls.version, "TLSv1.3")
        self.assertTrue(tls.cipher.startswith("TLS_"), tls.cipher)
        self.assertIn(tls.cipher_bits, (128, 256))
        self.assertIsNone(tls.server_name)
        self.assertIsNone(tls.peer)
        self.assertFalse(tls.is_peer_verified())
        self.assertEqual(
            common_name(client_tls.getHandle().get_peer_certificate(as_cryptography=True)),
            "server",
        )
