"""Tests for siptls.identity: RFC 5922 peer identity matching."""

from __future__ import annotations

from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from siptls.errors import IdentityError
from siptls.identity import (
    Identity,
    IdentityVerdict,
    match_identity,
    presented_identities,
    verify_identity,
)
from tests.certs import make_ca, make_cn_only_leaf, make_key, make_leaf

CA = make_ca()
KEY = make_key()


def leaf(**kwargs: object) -> x509.Certificate:
    """Build a leaf certificate under the shared test CA, reusing one key."""
    return make_leaf(CA, key=KEY, **kwargs).cert  # type: ignore[arg-type]


class PresentedIdentitiesTests(SynchronousTestCase):
    """presented_identities reads and normalises what a certificate claims."""

    def test_uri_hosts(self) -> None:
        """SIP and SIPS URIs without a user part become host names, without port or params."""
        cert = leaf(
            uris=[
                "sip:Example.COM:5061;transport=tls",
                "sips:b.example.com",
                "sip:c.example.com?x=y",
                "sip:[2001:DB8::1]:5061",
            ]
        )
        presented = presented_identities(cert)
        self.assertEqual(
            [i.name for i in presented.uri],
            ["example.com", "b.example.com", "c.example.com", "2001:db8::1"],
        )
        self.assertEqual(presented.uri[0].presented, "sip:Example.COM:5061;transport=tls")

    def test_user_part_and_other_schemes_skipped(self) -> None:
        """URIs with a user part or another scheme are not domain identities, and say why."""
        cert = leaf(uris=["sip:alice@example.com", "https://example.com/"])
        presented = presented_identities(cert)
        self.assertEqual(presented.uri, ())
        self.assertEqual(len(presented.skipped), 2)
        self.assertIn("user part", presented.skipped[0])
        self.assertIn("not a SIP URI", presented.skipped[1])

    def test_dns_ip_email(self) -> None:
        """DNS SANs are lower-cased, IP SANs kept, e-mail SANs skipped."""
        cert = leaf(dns=["WWW.Example.com"], ips=["192.0.2.1", "2001:db8::1"], emails=["a@b.c"])
        presented = presented_identities(cert)
        self.assertEqual(presented.dns, (Identity("dns", "www.example.com", "WWW.Example.com"),))
        self.assertEqual([i.name for i in presented.ip], ["192.0.2.1", "2001:db8::1"])
        self.assertTrue(presented.has_san)
        self.assertEqual(len(presented.skipped), 1)

    def test_cn_only_without_san(self) -> None:
        """The Common Name is read only when the certificate has no SAN extension."""
        without = presented_identities(make_cn_only_leaf(CA, "Example.com", key=KEY).cert)
        self.assertFalse(without.has_san)
        self.assertEqual([i.name for i in without.cn], ["example.com"])
        with_san = presented_identities(leaf(common_name="example.com", dns=["other.example"]))
        self.assertEqual(with_san.cn, ())

    def test_malformed_san_raises_identity_error(self) -> None:
        """A subjectAltName extension that is not valid DER raises IdentityError."""
        cert = leaf(san_der=b"\x30\x05\x82\x01")
        self.assertRaises(IdentityError, presented_identities, cert)


class MatchIdentityTests(SynchronousTestCase):
    """match_identity applies RFC 5922 §7 to a certificate and a SIP domain."""

    def assertMatch(self, verdict: IdentityVerdict, kind: str, presented: str) -> None:
        self.assertTrue(verdict.matched, verdict.reason)
        self.assertTrue(verdict)
        assert verdict.identity is not None
        self.assertEqual(verdict.identity_type, kind)
        self.assertEqual(verdict.identity.presented, presented)

    def assertNoMatch(self, verdict: IdentityVerdict) -> None:
        self.assertFalse(verdict.matched, verdict.reason)
        self.assertFalse(verdict)
        self.assertIsNone(verdict.identity)
        self.assertTrue(verdict.reason.endswith("."), verdict.reason)

    def test_uri_san(self) -> None:
        """A sip: URI SAN matches its host."""
        cert = leaf(uris=["sip:example.com"])
        self.assertMatch(match_identity(cert, "example.com"), "uri", "sip:example.com")

    def test_uri_san_with_port_and_params(self) -> None:
        """Port and parameters in a URI SAN do not stop it matching its host."""
        cert = leaf(uris=["sip:example.com:5061;transport=tls"])
        self.assertMatch(
            match_identity(cert, "example.com"), "uri", "sip:example.com:5061;transport=tls"
        )

    def test_uri_san_with_user_part(self) -> None:
        """A URI with a user part names a user, so it never vouches for the domain."""
        cert = leaf(uris=["sip:alice@example.com"])
        verdict = match_identity(cert, "example.com")
        self.assertNoMatch(verdict)
        self.assertIn("user part", verdict.reason)

    def test_uri_preferred_over_dns(self) -> None:
        """When both a URI and a DNS SAN match, the URI is reported."""
        cert = leaf(uris=["sip:example.com"], dns=["example.com"])
        self.assertMatch(match_identity(cert, "example.com"), "uri", "sip:example.com")

    def test_dns_after_uri(self) -> None:
        """DNS SANs are tried when no URI SAN matches (our reading of RFC 5922 §7.1)."""
        cert = leaf(uris=["sip:example.com"], dns=["proxy.example.com"])
        self.assertMatch(match_identity(cert, "proxy.example.com"), "dns", "proxy.example.com")

    def test_uri_exclusive(self) -> None:
        """With uri_exclusive, a certificate with URI identities is judged on those alone."""
        cert = leaf(uris=["sip:example.com"], dns=["proxy.example.com"])
        verdict = match_identity(cert, "proxy.example.com", uri_exclusive=True)
        self.assertNoMatch(verdict)
        self.assertIn("DNS names were not considered", verdict.reason)
        self.assertMatch(
            match_identity(cert, "example.com", uri_exclusive=True), "uri", "sip:example.com"
        )

    def test_dns_san(self) -> None:
        """A DNS SAN matches the same name."""
        cert = leaf(dns=["sip.example.org"])
        self.assertMatch(match_identity(cert, "sip.example.org"), "dns", "sip.example.org")

    def test_cn_only(self) -> None:
        """A certificate without SAN extension matches its CN."""
        cert = make_cn_only_leaf(CA, "example.net", key=KEY).cert
        self.assertMatch(match_identity(cert, "example.net"), "cn", "example.net")

    def test_cn_ignored_with_san(self) -> None:
        """Once a SAN extension exists, the CN is not an identity."""
        cert = leaf(common_name="example.net", dns=["other.example.net"])
        self.assertNoMatch(match_identity(cert, "example.net"))

    def test_wrong_name_reason(self) -> None:
        """A mismatch names every presented identity and the reference in one sentence."""
        cert = leaf(uris=["sip:a.example.com"], dns=["b.example.com"])
        verdict = match_identity(cert, "c.example.net")
        self.assertNoMatch(verdict)
        self.assertEqual(
            verdict.reason,
            "certificate for sip:a.example.com, DNS:b.example.com does not match "
            "the SIP domain 'c.example.net'.",
        )

    def test_no_identity_reason(self) -> None:
        """A certificate with nothing usable gets a reason saying so."""
        cert = make_leaf(CA, key=KEY).cert
        verdict = match_identity(cert, "example.com")
        self.assertNoMatch(verdict)
        self.assertIn("no usable identity", verdict.reason)

    def test_suffix_and_prefix_do_not_match(self) -> None:
        """Matching is on whole names: no suffix, prefix or parent-domain matches."""
        cert = leaf(uris=["sip:example.com"], dns=["example.com"])
        for reference in ["www.example.com", "ample.com", "example.co", "com", "example.com.au"]:
            self.assertNoMatch(match_identity(cert, reference))

    def test_case_variants(self) -> None:
        """Case differences in the certificate or the reference do not matter."""
        cert = leaf(uris=["SIP:EXAMPLE.com"], dns=["Proxy.Example.COM"])
        self.assertMatch(match_identity(cert, "example.COM"), "uri", "SIP:EXAMPLE.com")
        self.assertMatch(match_identity(cert, "PROXY.example.com"), "dns", "Proxy.Example.COM")

    def test_trailing_dot(self) -> None:
        """An absolute reference name (trailing dot) matches the same name."""
        cert = leaf(dns=["example.com"])
        self.assertMatch(match_identity(cert, "example.com."), "dns", "example.com")

    def test_idna(self) -> None:
        """A U-label reference matches the A-label SAN, in any case."""
        cert = leaf(dns=["xn--bcher-kva.example"], uris=["sip:xn--caf-dma.example"])
        self.assertMatch(match_identity(cert, "bücher.example"), "dns", "xn--bcher-kva.example")
        self.assertMatch(match_identity(cert, "BÜCHER.example"), "dns", "xn--bcher-kva.example")
        self.assertMatch(match_identity(cert, "café.example"), "uri", "sip:xn--caf-dma.example")
        self.assertMatch(
            match_identity(cert, "xn--bcher-kva.example"), "dns", "xn--bcher-kva.example"
        )

    def test_wildcards_off(self) -> None:
        """By default a wildcard DNS SAN matches nothing, and the reason says it would."""
        cert = leaf(dns=["*.example.com"])
        verdict = match_identity(cert, "a.example.com")
        self.assertNoMatch(verdict)
        self.assertIn("would match if wildcards were allowed", verdict.reason)

    def test_wildcards_on(self) -> None:
        """With allow_wildcards, *.example.com matches exactly one extra left-most label."""
        cert = leaf(dns=["*.example.com"])
        self.assertMatch(
            match_identity(cert, "A.example.com", allow_wildcards=True), "dns", "*.example.com"
        )
        for reference in ["example.com", "a.b.example.com", "a.example.org"]:
            self.assertNoMatch(match_identity(cert, reference, allow_wildcards=True))

    def test_wildcard_under_tld_and_partial(self) -> None:
        """*.com and partial wildcards (f*.example.com) never match."""
        cert = leaf(dns=["*.com", "f*.example.com"])
        self.assertNoMatch(match_identity(cert, "example.com", allow_wildcards=True))
        self.assertNoMatch(match_identity(cert, "foo.example.com", allow_wildcards=True))

    def test_wildcard_in_uri_never_matches(self) -> None:
        """A wildcard in a SIP URI SAN is not a valid host and is skipped."""
        cert = leaf(uris=["sip:*.example.com"])
        self.assertNoMatch(match_identity(cert, "a.example.com", allow_wildcards=True))

    def test_ip_reference(self) -> None:
        """An IP reference matches IP SANs, in any spelling, and nothing else."""
        cert = leaf(ips=["192.0.2.1", "2001:db8::1"], dns=["192.0.2.2"], uris=["sip:192.0.2.3"])
        self.assertMatch(match_identity(cert, "192.0.2.1"), "ip", "192.0.2.1")
        self.assertMatch(match_identity(cert, "2001:DB8:0::1"), "ip", "2001:db8::1")
        self.assertMatch(match_identity(cert, "[2001:db8::1]"), "ip", "2001:db8::1")
        for reference in ["192.0.2.2", "192.0.2.3", "192.0.2.4"]:
            verdict = match_identity(cert, reference)
            self.assertNoMatch(verdict)
            self.assertIn("IP address", verdict.reason)

    def test_ip_reference_ignores_cn(self) -> None:
        """A CN spelling an IP address is not an IP identity."""
        cert = make_cn_only_leaf(CA, "192.0.2.1", key=KEY).cert
        self.assertNoMatch(match_identity(cert, "192.0.2.1"))

    def test_bad_reference_raises(self) -> None:
        """match_identity raises IdentityError for a reference that is not a host name."""
        cert = leaf(dns=["example.com"])
        for reference in ["", "exa mple.com", "a..b", "sip:example.com", "x" * 64 + ".com"]:
            self.assertRaises(IdentityError, match_identity, cert, reference)


class VerifyIdentityTests(SynchronousTestCase):
    """verify_identity never raises; every failure becomes a rejection."""

    def test_bad_reference_rejected(self) -> None:
        """A bad reference gives a rejecting verdict naming it."""
        cert = leaf(dns=["example.com"])
        verdict = verify_identity(cert, "exa mple.com")
        self.assertFalse(verdict)
        self.assertIn("'exa mple.com'", verdict.reason)

    def test_non_text_reference_rejected(self) -> None:
        """A reference of the wrong type is rejected, not raised."""
        cert = leaf(dns=["example.com"])
        self.assertFalse(verify_identity(cert, b"example.com"))  # type: ignore[arg-type]
        self.assertFalse(verify_identity(cert, None))  # type: ignore[arg-type]

    def test_malformed_san_rejected(self) -> None:
        """Truncated SAN DER is rejected with a reason."""
        cert = leaf(san_der=b"\x30\x05\x82\x01")
        verdict = verify_identity(cert, "example.com")
        self.assertFalse(verdict)
        self.assertIn("could not be checked", verdict.reason)

    def test_non_ascii_dns_der_rejected(self) -> None:
        """A dNSName holding a non-ASCII byte is rejected, not raised."""
        cert = leaf(san_der=b"\x30\x03\x82\x01\xff")
        self.assertFalse(verify_identity(cert, "example.com"))

    def test_not_a_certificate_rejected(self) -> None:
        """Passing something that is not a certificate is rejected."""
        self.assertFalse(verify_identity(object(), "example.com"))  # type: ignore[arg-type]

    def test_match_passes_through(self) -> None:
        """A good match is returned unchanged."""
        cert = leaf(uris=["sips:example.com"])
        verdict = verify_identity(cert, "example.com")
        self.assertTrue(verdict)
        self.assertEqual(verdict.identity_type, "uri")

    @settings(max_examples=150, deadline=None)
    @given(st.text())
    def test_arbitrary_reference_never_raises(self, reference: str) -> None:
        """Any reference string yields a verdict, never an exception."""
        cert = FUZZ_CERT
        verdict = verify_identity(cert, reference, allow_wildcards=True)
        self.assertIsInstance(verdict, IdentityVerdict)
        self.assertIsInstance(verdict.reason, str)

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        st.lists(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E)), max_size=3),
        st.lists(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E)), max_size=3),
        st.sampled_from(["example.com", "192.0.2.1", "ex*mple.com", "xn--bcher-kva.example"]),
    )
    def test_arbitrary_san_values_never_raise(
        self, uris: list[str], dns: list[str], reference: str
    ) -> None:
        """Any printable URI and DNS SAN values yield a verdict, never an exception."""
        try:
            cert = leaf(uris=uris, dns=dns)
        except Exception:
            return  # the builder refused the value; nothing to check
        verdict = verify_identity(cert, reference)
        self.assertIsInstance(verdict, IdentityVerdict)


FUZZ_CERT = make_leaf(
    CA,
    key=KEY,
    uris=["sip:example.com:5061", "sip:alice@example.com"],
    dns=["*.example.com", "xn--bcher-kva.example"],
    ips=["192.0.2.1", "::1"],
).cert
