"""Tests for siptls.listen and siptls.selfsigned."""

from __future__ import annotations

import os

from cryptography import x509
from twisted.trial.unittest import SynchronousTestCase

from siptls.errors import ConfigError
from siptls.listen import ListenAddress, parse_listen
from siptls.selfsigned import ensure_self_signed


class ListenTests(SynchronousTestCase):
    def test_forms(self) -> None:
        """tls:IP:PORT, bracketed IPv6, a bare IP and the default port parse."""
        self.assertEqual(parse_listen("tls:127.0.0.1:5061"), ListenAddress("127.0.0.1", 5061))
        self.assertEqual(parse_listen("tls:[::1]:5062"), ListenAddress("::1", 5062))
        self.assertEqual(parse_listen("127.0.0.2"), ListenAddress("127.0.0.2", 5061))
        self.assertEqual(parse_listen("TLS:[::1]"), ListenAddress("::1", 5061))
        self.assertEqual(str(parse_listen("tls:[0:0::1]:5")), "tls:[::1]:5")

    def test_errors(self) -> None:
        """Other protocols, names, bad ports and unclosed brackets are refused clearly."""
        for text, fragment in [
            ("udp:127.0.0.1:5060", "SIP over TLS only"),
            ("tls:example.com:5061", "not an IP address"),
            ("tls:127.0.0.1:0", "not 1-65535"),
            ("tls:127.0.0.1:99999", "not 1-65535"),
            ("tls:[::1:5061", "closing ']'"),
        ]:
            with self.assertRaises(ConfigError) as caught:
                parse_listen(text)
            self.assertIn(fragment, str(caught.exception))
            self.assertIn("--listen", str(caught.exception))


class SelfSignedTests(SynchronousTestCase):
    def test_created_then_reused(self) -> None:
        """The pair is made once (key 0600, loopback SANs) and reused afterwards."""
        directory = os.path.abspath(self.mktemp())
        first = ensure_self_signed(directory, hostname="sip.example.test")
        self.assertTrue(first.created)
        self.assertEqual(os.stat(first.private_key).st_mode & 0o777, 0o600)
        cert = x509.load_pem_x509_certificate(first.certificate.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertIn("sip.example.test", sans.get_values_for_type(x509.DNSName))
        self.assertEqual(
            sorted(str(ip) for ip in sans.get_values_for_type(x509.IPAddress)), ["127.0.0.1", "::1"]
        )
        second = ensure_self_signed(directory)
        self.assertFalse(second.created)
        self.assertEqual(second.fingerprint, first.fingerprint)
        self.assertRegex(first.fingerprint, r"^([0-9A-F]{2}:){31}[0-9A-F]{2}$")
