"""Tests for siptls.domains: server selection by socket and SNI, client selection."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from siptls.config import Domain, load_config_text
from siptls.domains import DomainTable, normalize_lookup_name

CFG = """\
[server:default]
certificate = default.pem

[server:127.0.0.1:5061]
certificate = one.pem

[server:127.0.0.2:5061]
certificate = two-a.pem
server_name = a.example

[server:127.0.0.2:5061]
certificate = two-b.pem
server_name = Bücher.example
server_name_mode = 1

[server:127.0.0.3:0]
certificate = three.pem

[server:any]
certificate = exact.pem
server_name = sip.example.com

[server:any]
certificate = sub.pem
server_name = example.com
server_name_mode = 2

[server:any]
certificate = both.pem
server_name = deep.example.com
server_name_mode = 1

[server:any]
certificate = apex.pem
server_name = a.example
server_name_mode = 0

[client:default]
certificate = c-default.pem

[client:10.0.0.1:5061]
certificate = c-dest.pem

[client:10.0.0.2:5061]
certificate = c-named.pem
server_name = peer.example
server_name_mode = 1
server_id = Peer-One

[client:10.0.0.2:5061]
certificate = c-named2.pem
server_name = other.example

[client:10.0.0.3:0]
certificate = c-anyport.pem

[client:any]
certificate = c-any.pem
server_name = carrier.example
server_name_mode = 1
server_id = carrier
"""


def cert(result: tuple[Domain, str] | None) -> tuple[str, str] | None:
    """(certificate file name, reason) of a lookup result."""
    if result is None:
        return None
    domain, reason = result
    assert domain.certificate is not None
    return domain.certificate.rsplit("/", 1)[1], reason


class TableTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        config = load_config_text(
            CFG,
            base_dir="/etc/siptls",
            default_certificate="/gen/d.pem",
            default_private_key="/gen/d.key",
            check_files=False,
        ).config
        self.table = DomainTable(config)


class ServerSocketTests(TableTestCase):
    def test_exact_address(self) -> None:
        """Two domains on 127.0.0.1:5061 and 127.0.0.2:5061 are told apart by local IP."""
        self.assertEqual(
            cert(self.table.server_for_socket("127.0.0.1", 5061)), ("one.pem", "socket")
        )
        self.assertEqual(
            cert(self.table.server_for_socket("127.0.0.2", 5061)), ("two-a.pem", "socket")
        )

    def test_port_mismatch_falls_to_default(self) -> None:
        """A known IP on another port, or an unknown IP, gets the server default."""
        self.assertEqual(
            cert(self.table.server_for_socket("127.0.0.1", 5062)), ("default.pem", "default")
        )
        self.assertEqual(
            cert(self.table.server_for_socket("192.0.2.1", 5061)), ("default.pem", "default")
        )

    def test_port_zero(self) -> None:
        """A domain with port 0 matches its IP on any port."""
        for port in (5061, 443):
            self.assertEqual(
                cert(self.table.server_for_socket("127.0.0.3", port)), ("three.pem", "socket")
            )

    def test_mapped_ipv4(self) -> None:
        """An IPv4-mapped IPv6 local address matches the IPv4 domain."""
        self.assertEqual(
            cert(self.table.server_for_socket("::ffff:127.0.0.1", 5061)), ("one.pem", "socket")
        )


class ServerSNITests(TableTestCase):
    def sni(self, local_ip: str, name: str | bytes | None) -> tuple[str, str] | None:
        initial, _ = self.table.server_for_socket(local_ip, 5061)
        return cert(self.table.server_for_sni(initial, name))

    def test_mode_0_exact(self) -> None:
        """Mode 0 matches only the exact name, in any case."""
        self.assertEqual(self.sni("192.0.2.1", "sip.example.com"), ("exact.pem", "any"))
        self.assertEqual(self.sni("192.0.2.1", "SIP.Example.COM"), ("exact.pem", "any"))
        self.assertEqual(self.sni("192.0.2.1", b"sip.example.com."), ("exact.pem", "any"))

    def test_mode_2_subdomains_only(self) -> None:
        """Mode 2 matches subdomains at any depth but not the apex."""
        self.assertEqual(self.sni("192.0.2.1", "x.example.com"), ("sub.pem", "any"))
        self.assertEqual(self.sni("192.0.2.1", "a.b.example.com"), ("sub.pem", "any"))
        self.assertIsNone(self.sni("192.0.2.1", "example.com"))
        self.assertIsNone(self.sni("192.0.2.1", "badexample.com"))

    def test_mode_1_domain_and_subdomains(self) -> None:
        """Mode 1 matches the name itself and its subdomains."""
        self.assertEqual(self.sni("192.0.2.1", "deep.example.com"), ("both.pem", "any"))
        self.assertEqual(self.sni("192.0.2.1", "x.deep.example.com"), ("both.pem", "any"))

    def test_exact_beats_suffix(self) -> None:
        """An exact-name match beats a suffix match of another domain."""
        # sip.example.com is also a subdomain of example.com (mode 2).
        self.assertEqual(self.sni("192.0.2.1", "sip.example.com"), ("exact.pem", "any"))

    def test_longer_suffix_wins(self) -> None:
        """The longest matching parent domain wins."""
        self.assertEqual(self.sni("192.0.2.1", "y.x.deep.example.com"), ("both.pem", "any"))
        self.assertEqual(self.sni("192.0.2.1", "y.other.example.com"), ("sub.pem", "any"))

    def test_ip_domain_beats_any(self) -> None:
        """A named domain of the initial socket beats an any domain of the same name."""
        self.assertEqual(self.sni("127.0.0.2", "a.example"), ("two-a.pem", "server_name"))
        self.assertEqual(self.sni("192.0.2.1", "a.example"), ("apex.pem", "any"))

    def test_idna_names(self) -> None:
        """Unicode and A-label SNI names both match an IDNA server_name."""
        self.assertEqual(self.sni("127.0.0.2", "BÜCHER.example"), ("two-b.pem", "server_name"))
        self.assertEqual(
            self.sni("127.0.0.2", "xn--bcher-kva.example"), ("two-b.pem", "server_name")
        )
        self.assertEqual(
            self.sni("127.0.0.2", "www.xn--bcher-kva.example"), ("two-b.pem", "server_name")
        )

    def test_unknown_names(self) -> None:
        """Unknown, empty, absent or invalid names match nothing (None)."""
        for name in ("nowhere.test", "", None, b"\xff\xfe", "bad\u200d.example", "."):
            self.assertIsNone(self.sni("127.0.0.2", name), name)

    def test_other_socket_names_unreachable(self) -> None:
        """A named domain of another socket is not reachable by SNI."""
        self.assertIsNone(self.sni("127.0.0.1", "www.bücher.example"))

    def test_normalize_lookup_name(self) -> None:
        """Lookup names are lower-cased, IDNA-encoded and lose one trailing dot."""
        self.assertEqual(normalize_lookup_name("Bücher.Example."), "xn--bcher-kva.example")
        self.assertEqual(normalize_lookup_name(b"SIP.example"), "sip.example")
        self.assertIsNone(normalize_lookup_name(None))


class ClientTests(TableTestCase):
    def test_server_id_first(self) -> None:
        """server_id (case-insensitive) wins over every other path."""
        self.assertEqual(
            cert(self.table.client_for("10.0.0.1", 5061, "carrier.example", "peer-one")),
            ("c-named.pem", "server_id"),
        )
        self.assertEqual(
            cert(self.table.client_for("192.0.2.9", 5061, server_id="CARRIER")),
            ("c-any.pem", "server_id"),
        )

    def test_unknown_server_id(self) -> None:
        """An unknown server_id falls through to the other paths."""
        self.assertEqual(
            cert(self.table.client_for("10.0.0.1", 5061, server_id="nobody")),
            ("c-dest.pem", "destination"),
        )

    def test_server_name_at_destination(self) -> None:
        """A server_name matches named domains for the destination, with their mode."""
        self.assertEqual(
            cert(self.table.client_for("10.0.0.2", 5061, "other.example")),
            ("c-named2.pem", "server_name"),
        )
        self.assertEqual(
            cert(self.table.client_for("10.0.0.2", 5061, "sip.PEER.example")),
            ("c-named.pem", "server_name"),
        )

    def test_destination(self) -> None:
        """Without a matching name, the destination ip:port (or ip:0) selects."""
        self.assertEqual(
            cert(self.table.client_for("10.0.0.1", 5061)), ("c-dest.pem", "destination")
        )
        self.assertEqual(
            cert(self.table.client_for("10.0.0.1", 5061, "carrier.example")),
            ("c-dest.pem", "destination"),
        )
        self.assertEqual(
            cert(self.table.client_for("10.0.0.3", 5099)), ("c-anyport.pem", "destination")
        )
        self.assertEqual(
            cert(self.table.client_for("10.0.0.2", 5061)), ("c-named.pem", "destination")
        )

    def test_any_by_name(self) -> None:
        """[client:any] is reached only by a matching server_name."""
        self.assertEqual(
            cert(self.table.client_for("192.0.2.9", 5061, "edge.carrier.example")),
            ("c-any.pem", "any"),
        )
        self.assertEqual(
            cert(self.table.client_for("10.0.0.2", 5061, "carrier.example")),
            ("c-any.pem", "any"),
        )

    def test_default(self) -> None:
        """Everything else gets the client default."""
        self.assertEqual(
            cert(self.table.client_for("192.0.2.9", 5061)), ("c-default.pem", "default")
        )
        self.assertEqual(
            cert(self.table.client_for("192.0.2.9", 5061, "unknown.example")),
            ("c-default.pem", "default"),
        )
        self.assertEqual(
            cert(self.table.client_for("10.0.0.1", 5062)), ("c-default.pem", "default")
        )

    def test_domain_by_id(self) -> None:
        """Named domains on one address share a display id."""
        self.assertEqual(len(self.table.domain_by_id("TLSc<10.0.0.2:5061>")), 2)
        self.assertEqual(len(self.table.domain_by_id("TLSs<any:example.com>")), 1)
