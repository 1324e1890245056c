"""Tests for the tests/certs.py builders other test modules rely on."""

from __future__ import annotations

import os
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from twisted.trial.unittest import SynchronousTestCase

from tests.certs import (
    make_ca,
    make_crl,
    make_expired_leaf,
    make_future_leaf,
    make_leaf,
    now,
)


class CertsTests(SynchronousTestCase):
    """The certificate builders produce what their docstrings promise."""

    def test_leaf_signed_by_ca_with_sans(self) -> None:
        """A leaf carries the requested SANs and verifies against its CA."""
        ca = make_ca()
        leaf = make_leaf(ca, uris=["sip:example.com"], dns=["example.com"], ips=["::1"])
        leaf.cert.verify_directly_issued_by(ca.cert)
        san = leaf.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(
            san.get_values_for_type(x509.UniformResourceIdentifier), ["sip:example.com"]
        )
        self.assertEqual(leaf.chain, ())

    def test_intermediate_chain(self) -> None:
        """A leaf under an intermediate lists the intermediate in its chain."""
        root = make_ca()
        inter = make_ca(issuer=root)
        leaf = make_leaf(inter, dns=["example.com"])
        self.assertEqual(leaf.chain, (inter.cert,))
        inter.cert.verify_directly_issued_by(root.cert)
        self.assertEqual(leaf.chain_pem().count(b"BEGIN CERTIFICATE"), 2)

    def test_validity_shortcuts(self) -> None:
        """Expired leaves ended in the past; future leaves start in the future."""
        ca = make_ca()
        self.assertLess(make_expired_leaf(ca).cert.not_valid_after_utc, now())
        self.assertGreater(make_future_leaf(ca).cert.not_valid_before_utc, now())

    def test_encrypted_key_and_write(self) -> None:
        """key_pem(password) needs the password; write() puts chain and key on disk."""
        leaf = make_leaf(None, common_name="self.example")
        pem = leaf.key_pem(b"secret")
        self.assertRaises(TypeError, load_pem_private_key, pem, None)
        load_pem_private_key(pem, b"secret")
        with tempfile.TemporaryDirectory() as directory:
            cert_path, key_path = leaf.write(directory, "server", password=b"secret")
            self.assertEqual(os.stat(key_path).st_mode & 0o777, 0o600)
            with open(cert_path, "rb") as f:
                self.assertEqual(x509.load_pem_x509_certificate(f.read()), leaf.cert)

    def test_crl(self) -> None:
        """A CRL lists the revoked serials and is signed by the CA."""
        ca = make_ca()
        leaf = make_leaf(ca, dns=["example.com"])
        crl = make_crl(ca, revoked=[leaf.cert, 12345])
        self.assertTrue(crl.is_signature_valid(ca.key.public_key()))
        self.assertIsNotNone(crl.get_revoked_certificate_by_serial_number(leaf.cert.serial_number))
        self.assertIsNotNone(crl.get_revoked_certificate_by_serial_number(12345))
