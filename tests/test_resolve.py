"""Tests for siptls.target (parsing) and siptls.resolve (RFC 3263 over a loopback DNS server)."""

from __future__ import annotations

import random
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTCP, IReactorUDP
from twisted.names import client, common, dns, error, server
from twisted.trial.unittest import SynchronousTestCase, TestCase

from siptls.errors import ResolutionError
from siptls.resolve import SrvRecord, TargetResolver, order_srv
from siptls.target import Target, parse_target

# ---------------------------------------------------------------------------
# Parsing (pure)


class ParseTargetTests(SynchronousTestCase):
    """parse_target reads SIP/SIPS URIs and host[:port] strings."""

    def assertTarget(self, text: str, host: str, port: int | None, is_ip: bool) -> Target:
        target = parse_target(text)
        self.assertEqual(
            target,
            Target(host=host, port=port, is_ip=is_ip, server_name=None if is_ip else host),
        )
        return target

    def assertRefused(self, text: str, fragment: str) -> None:
        exc = self.assertRaises(ResolutionError, parse_target, text)
        self.assertIn(fragment, str(exc))
        self.assertEqual(exc.name, text)

    def test_sips_uri(self) -> None:
        """A sips: URI gives its host, no port, and the host as server name."""
        self.assertTarget("sips:example.com", "example.com", None, False)

    def test_sip_transport_tls(self) -> None:
        """A sip: URI with ;transport=tls (any case) is a TLS target."""
        self.assertTarget("sip:example.com;transport=TLS", "example.com", None, False)
        self.assertTarget("SIP:Example.COM:5071;lr;Transport=tls", "example.com", 5071, False)

    def test_sip_without_tls_refused(self) -> None:
        """A sip: URI without transport=tls, or with another transport, is refused."""
        self.assertRefused("sip:example.com", "transport=tls")
        self.assertRefused("sip:example.com;transport=tcp", "transport=tls")
        self.assertRefused("sips:example.com;transport=udp", "'udp'")

    def test_sips_transport_tcp_allowed(self) -> None:
        """sips:...;transport=tcp means TLS over TCP and is accepted."""
        self.assertTarget("sips:example.com;transport=tcp", "example.com", None, False)

    def test_user_part_params_headers(self) -> None:
        """User, password, parameters and headers do not leak into the host."""
        self.assertTarget(
            "sips:al;ice?x:secret@Example.com:5062;maddr=x;lr?Subject=hi&h=a",
            "example.com",
            5062,
            False,
        )

    def test_ipv6_uri(self) -> None:
        """IPv6 in brackets, with and without port, is an IP target with no server name."""
        self.assertTarget("sips:[2001:DB8::1]", "2001:db8::1", None, True)
        self.assertTarget("sips:alice@[2001:db8::1]:5062;x=y", "2001:db8::1", 5062, True)

    def test_ipv4_uri(self) -> None:
        """An IPv4 host is an IP target."""
        self.assertTarget("sips:192.0.2.1:5062", "192.0.2.1", 5062, True)

    def test_host_port_strings(self) -> None:
        """Plain host, host:port, [v6]:port and bare IPv6 are accepted."""
        self.assertTarget("example.com", "example.com", None, False)
        self.assertTarget("Example.com.:5061", "example.com", 5061, False)
        self.assertTarget("[::1]:5061", "::1", 5061, True)
        self.assertTarget("[::1]", "::1", None, True)
        self.assertTarget("2001:db8::5", "2001:db8::5", None, True)
        self.assertTarget("127.0.0.1:5061", "127.0.0.1", 5061, True)

    def test_idna_host(self) -> None:
        """A U-label host becomes its A-label form."""
        self.assertTarget("sips:Bücher.example", "xn--bcher-kva.example", None, False)

    def test_bad_ports(self) -> None:
        """Ports outside 1-65535 or not numeric are refused with the port named."""
        for text in ["example.com:0", "example.com:65536", "example.com:abc", "example.com:"]:
            self.assertRefused(text, "port")
        self.assertRefused("sips:[::1]:x", "port")

    def test_bad_hosts(self) -> None:
        """Empty hosts, unclosed brackets and junk are refused."""
        self.assertRefused("", "not a SIP target")
        self.assertRefused(" example.com", "not a SIP target")
        self.assertRefused("sips:", "no host")
        self.assertRefused("sips:alice@;x=y", "no host")
        self.assertRefused("[::1", "unclosed")
        self.assertRefused("[example.com]:5061", "not an IPv6 address")
        self.assertRefused("[::1]5061", "after its IPv6 host")
        self.assertRefused("exa mple.com", "valid host")
        self.assertRefused("a:b:c", "neither host[:port]")

    @settings(max_examples=200, deadline=None)
    @given(st.text())
    def test_arbitrary_text(self, text: str) -> None:
        """Any string either parses or raises ResolutionError, nothing else."""
        try:
            target = parse_target(text)
        except ResolutionError:
            return
        self.assertIsInstance(target, Target)


class OrderSrvTests(SynchronousTestCase):
    """order_srv follows RFC 2782."""

    records = [
        SrvRecord(20, 0, 5061, "c.example.com"),
        SrvRecord(10, 5, 5061, "b.example.com"),
        SrvRecord(10, 50, 5061, "a.example.com"),
        SrvRecord(10, 0, 5061, "z.example.com"),
    ]

    def test_deterministic(self) -> None:
        """Without an rng: priority, then heaviest weight, then name."""
        self.assertEqual(
            [r.target for r in order_srv(self.records, None)],
            ["a.example.com", "b.example.com", "z.example.com", "c.example.com"],
        )

    def test_weighted_respects_priority(self) -> None:
        """With an rng every record appears once and priorities never interleave."""
        for seed in range(20):
            ordered = order_srv(self.records, random.Random(seed))
            self.assertEqual(
                sorted(ordered, key=lambda r: r.target),
                sorted(self.records, key=lambda r: r.target),
            )
            self.assertEqual(ordered[-1].target, "c.example.com")

    def test_weighted_pick(self) -> None:
        """A pick of 0 takes a zero-weight record first; a high pick takes the heavy one."""

        class Fixed(random.Random):
            def __init__(self, value: int) -> None:
                super().__init__(0)
                self.value = value

            def randint(self, a: int, b: int) -> int:
                return min(self.value, b)

        self.assertEqual(order_srv(self.records, Fixed(0))[0].target, "z.example.com")
        self.assertEqual(order_srv(self.records, Fixed(55))[0].target, "a.example.com")


# ---------------------------------------------------------------------------
# Resolution against a DNS server on loopback


class MemoryAuthority(common.ResolverBase):
    """An in-memory zone: answers from a dict, NXDOMAIN for unknown names."""

    def __init__(self, records: dict[str, list[Any]]) -> None:
        super().__init__()
        self.records = {name.lower(): rrs for name, rrs in records.items()}
        self.queries: list[tuple[str, int]] = []

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> defer.Deferred[Any]:
        key = name.decode("ascii").lower()
        self.queries.append((key, type))
        if key not in self.records:
            return defer.fail(error.DomainError(key))
        answers = [
            dns.RRHeader(name=key, type=rr.TYPE, payload=rr, ttl=60, auth=True)
            for rr in self.records[key]
            if rr.TYPE == type
        ]
        return defer.succeed((answers, [], []))


def dns_resolver(case: Any, authority: MemoryAuthority) -> client.Resolver:
    """Serve ``authority`` on 127.0.0.1 (UDP and TCP) for ``case``; a client resolver for it."""
    factory = server.DNSServerFactory(authorities=[authority])
    # UDP and TCP must share one port number; an ephemeral UDP port may
    # already be taken for TCP by some other process, so try a few.
    for _attempt in range(20):
        udp = cast(IReactorUDP, reactor).listenUDP(
            0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1", maxPacketSize=8192
        )
        port = cast(IPv4Address, udp.getHost()).port
        try:
            tcp = cast(IReactorTCP, reactor).listenTCP(port, factory, interface="127.0.0.1")
        except CannotListenError:
            udp.stopListening()
            continue
        break
    else:
        case.fail("Could not find a free UDP+TCP port pair on 127.0.0.1.")
    case.addCleanup(udp.stopListening)
    case.addCleanup(tcp.stopListening)
    return client.Resolver(servers=[("127.0.0.1", port)], reactor=reactor, timeout=(2,))


def srv(priority: int, weight: int, port: int, target: str | bytes) -> dns.Record_SRV:
    return dns.Record_SRV(priority, weight, port, target, ttl=60)


class ResolveTests(TestCase):
    """TargetResolver asks a real DNS server (UDP and TCP on 127.0.0.1)."""

    def serve(self, records: dict[str, list[Any]]) -> TargetResolver:
        """Start a DNS server for ``records`` and return a resolver pointed at it."""
        self.authority = MemoryAuthority(records)
        return TargetResolver(dns_resolver(self, self.authority), deterministic=True)

    zone: dict[str, list[Any]] = {
        "_sips._tcp.example.com": [
            srv(20, 0, 5064, "backup.example.com"),
            srv(10, 10, 5062, "b.example.com"),
            srv(10, 60, 5063, "a.example.com"),
        ],
        "a.example.com": [dns.Record_A("192.0.2.1"), dns.Record_AAAA("2001:db8::1")],
        "b.example.com": [dns.Record_A("192.0.2.2")],
        "backup.example.com": [dns.Record_A("192.0.2.3")],
        "example.com": [dns.Record_A("192.0.2.10")],
        "plain.example.org": [dns.Record_A("192.0.2.20"), dns.Record_AAAA("2001:db8::20")],
        "nosrv.example.org": [dns.Record_A("192.0.2.21")],
        "_sips._tcp.nosrv.example.org": [dns.Record_TXT(b"no srv here")],
        "empty.example.org": [dns.Record_TXT(b"no addresses")],
        "_sips._tcp.closed.example.org": [srv(0, 0, 0, b"")],
        "_sips._tcp.broken.example.org": [
            srv(10, 0, 5061, "missing.example.org"),
            srv(20, 0, 5065, "nosrv.example.org"),
        ],
    }

    async def check(self, target: str, expected: list[tuple[str, int]]) -> None:
        resolver = self.serve(self.zone)
        self.assertEqual(await resolver.resolve(target), expected)

    def test_srv_order(self) -> defer.Deferred[None]:
        """SRV records are tried by priority then weight; each target gives A then AAAA."""
        return defer.ensureDeferred(
            self.check(
                "sips:example.com",
                [
                    ("192.0.2.1", 5063),
                    ("2001:db8::1", 5063),
                    ("192.0.2.2", 5062),
                    ("192.0.2.3", 5064),
                ],
            )
        )

    def test_sip_transport_tls_uses_sips_srv(self) -> defer.Deferred[None]:
        """sip:...;transport=tls looks up _sips._tcp as well."""
        return defer.ensureDeferred(
            self.check(
                "sip:example.com;transport=tls",
                [
                    ("192.0.2.1", 5063),
                    ("2001:db8::1", 5063),
                    ("192.0.2.2", 5062),
                    ("192.0.2.3", 5064),
                ],
            )
        )

    def test_fallback_to_address_when_srv_nxdomain(self) -> defer.Deferred[None]:
        """Without an SRV name, the host's A and AAAA records are used on port 5061."""
        return defer.ensureDeferred(
            self.check("sips:plain.example.org", [("192.0.2.20", 5061), ("2001:db8::20", 5061)])
        )

    def test_fallback_to_address_when_srv_nodata(self) -> defer.Deferred[None]:
        """An SRV name with no SRV records also falls back to A/AAAA."""
        return defer.ensureDeferred(self.check("nosrv.example.org", [("192.0.2.21", 5061)]))

    async def _explicit_port(self) -> None:
        resolver = self.serve(self.zone)
        self.assertEqual(await resolver.resolve("sips:example.com:5070"), [("192.0.2.10", 5070)])
        self.assertNotIn(("_sips._tcp.example.com", dns.SRV), self.authority.queries)

    def test_explicit_port(self) -> defer.Deferred[None]:
        """With an explicit port no SRV lookup is made; the host's addresses get that port."""
        return defer.ensureDeferred(self._explicit_port())

    def test_ip_literals(self) -> None:
        """IP literals resolve to themselves (port 5061 by default) without asking DNS."""

        class NoDNS:
            def __getattr__(self, name: str) -> Any:
                raise AssertionError(f"DNS was asked ({name})")

        resolver = TargetResolver(NoDNS())  # type: ignore[arg-type]
        cases = {
            "sips:192.0.2.1": [("192.0.2.1", 5061)],
            "[2001:db8::1]:5070": [("2001:db8::1", 5070)],
            "127.0.0.1": [("127.0.0.1", 5061)],
        }
        for text, expected in cases.items():
            self.assertEqual(self.successResultOf(resolver.resolve(text)), expected)

    async def _failure(self, target: str, fragment: str) -> None:
        resolver = self.serve(self.zone)
        try:
            await resolver.resolve(target)
        except ResolutionError as exc:
            self.assertIn(fragment, str(exc))
        else:
            self.fail(f"{target!r} resolved")

    def test_nxdomain(self) -> defer.Deferred[None]:
        """A name that does not exist fails with ResolutionError naming it."""
        return defer.ensureDeferred(
            self._failure("sips:nowhere.example.net", "'nowhere.example.net' does not exist")
        )

    def test_no_addresses(self) -> defer.Deferred[None]:
        """A name without A/AAAA records fails with ResolutionError saying so."""
        return defer.ensureDeferred(
            self._failure("empty.example.org:5061", "'empty.example.org' has no A or AAAA")
        )

    def test_srv_dot_target(self) -> defer.Deferred[None]:
        """An SRV target of '.' means no service and fails clearly."""
        return defer.ensureDeferred(self._failure("sips:closed.example.org", "offers no SIP"))

    def test_unresolvable_srv_target_skipped(self) -> defer.Deferred[None]:
        """An SRV target that does not resolve is skipped; the others are used."""
        return defer.ensureDeferred(self.check("sips:broken.example.org", [("192.0.2.21", 5065)]))

    def test_parse_error_fails_deferred(self) -> None:
        """A bad target string fails the Deferred with ResolutionError, not a raise."""
        resolver = TargetResolver(client.Resolver(servers=[("127.0.0.1", 53)]))
        self.failureResultOf(resolver.resolve("sip:example.com"), ResolutionError)

    def test_large_srv_set(self) -> defer.Deferred[None]:
        """An SRV answer of 30 records (over 512 bytes) is resolved in full and in order."""
        zone: dict[str, list[Any]] = {
            "_sips._tcp.big.example.org": [
                srv(10, 1, 6000 + i, f"host-with-a-long-name-{i:02d}.big.example.org")
                for i in range(30)
            ],
            **{
                f"host-with-a-long-name-{i:02d}.big.example.org": [dns.Record_A(f"192.0.2.{i}")]
                for i in range(30)
            },
        }

        async def run() -> None:
            resolver = self.serve(zone)
            result = await resolver.resolve("sips:big.example.org")
            self.assertEqual(len(result), 30)
            self.assertEqual(result[0], ("192.0.2.0", 6000))

        return defer.ensureDeferred(run())
