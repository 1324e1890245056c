"""Hot reload in memory: generations swapped, old ones released, memory bounded.

A real :class:`SIPTLSService` is built on a `Clock` (never started, so no
socket is opened); clients connect to its TLS factory through ``iosim``.
"""

from __future__ import annotations

import gc
import os
import tracemalloc
import weakref
from typing import Any

from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.logger import Logger, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test.iosim import FakeTransport, IOPump, connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

import siptls.contexts
import siptls.protocol
import siptls.service
from siptls.errors import ConfigError
from siptls.registry import ConnectionRegistry
from siptls.service import SIPTLSService
from tests.certs import Issued, make_ca, make_leaf
from tests.tlsloop import RecordingClient

OPTIONS = (
    b"OPTIONS sip:siptls@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS 127.0.0.1:40000;branch=z9hG4bKreload\r\n"
    b"From: <sip:test@127.0.0.1>;tag=1\r\nTo: <sip:siptls@127.0.0.1>\r\n"
    b"Call-ID: reload-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
    b"Content-Length: 0\r\n\r\n"
)


@implementer(IOpenSSLClientConnectionCreator)
class AnyServerClient:
    """A TLS client creator that accepts any server certificate."""

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)


class ServiceLoop:
    """A SIPTLSService on a Clock, with in-memory TLS clients."""

    def __init__(self, directory: str, params: dict[str, str], **kwargs: Any) -> None:
        self.clock = Clock()
        self.service = SIPTLSService(
            ["tls:127.0.0.1:5061"], params, workdir=directory, reactor=self.clock, **kwargs
        )
        self._port = 40000

    def connect(self) -> tuple[RecordingClient, Any, Any, IOPump]:
        """A handshaken client: (client protocol, client TLS, server TLS, pump)."""
        self._port += 1
        client = RecordingClient()
        client_factory = TLSMemoryBIOFactory(
            AnyServerClient(), True, Factory.forProtocol(lambda: client), clock=self.clock
        )
        host = IPv4Address("TCP", "127.0.0.1", 5061)
        peer = IPv4Address("TCP", "127.0.0.1", self._port)
        server_factory = self.service.tls_factory()
        client_tls, server_tls, pump = connectedServerAndClient(
            lambda: server_factory.buildProtocol(peer),
            lambda: client_factory.buildProtocol(host),
            clientTransportFactory=lambda p: FakeTransport(p, False, peer, host),
            serverTransportFactory=lambda p: FakeTransport(p, True, host, peer),
            clock=self.clock,
        )
        pump.flush()
        return client, client_tls, server_tls, pump


def write_identity(directory: str, ca: Issued, name: str) -> Issued:
    """Write ``server.pem``/``server.key`` for a new leaf named ``name``; return it."""
    leaf = make_leaf(ca, common_name=name, dns=[name], key=ca.key)
    leaf.write(directory, "server")
    return leaf


def resident_bytes() -> int:
    """This process's resident set size (Linux), or 0 where /proc is missing."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def peer_common_name(client_tls: Any) -> str:
    cert = client_tls.getPeerCertificate().to_cryptography()
    return str(cert.subject.rfc4514_string())


class Logged:
    """Collects log events' formatted text while installed."""

    def __init__(self, test: SynchronousTestCase) -> None:
        from twisted.logger import formatEvent

        self.lines: list[str] = []
        observer = lambda event: self.lines.append(formatEvent(event))  # noqa: E731
        globalLogPublisher.addObserver(observer)
        test.addCleanup(globalLogPublisher.removeObserver, observer)


class ReloadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.ca = make_ca("siptls reload CA")
        write_identity(self.dir, self.ca, "first.example")
        self.params = {
            "certificate": os.path.join(self.dir, "server.pem"),
            "private_key": os.path.join(self.dir, "server.key"),
        }
        self.loop = ServiceLoop(self.dir, self.params)
        self.service = self.loop.service

    def test_new_connections_use_the_new_generation(self) -> None:
        """After a reload new connections get the new certificate; old ones keep theirs."""
        old_client, old_tls, _, old_pump = self.loop.connect()
        self.assertIn("CN=first.example", peer_common_name(old_tls))
        write_identity(self.dir, self.ca, "second.example")
        self.assertEqual(self.service.reload(), 2)
        _, new_tls, _, _ = self.loop.connect()
        self.assertIn("CN=second.example", peer_common_name(new_tls))
        self.assertEqual(self.service.registry.by_generation(), {1: 1, 2: 1})
        # The old connection still answers.
        old_tls.write(OPTIONS)
        old_pump.flush()
        self.assertIn(b"SIP/2.0 200 OK", old_client.received)

    def test_old_generation_released_with_its_last_connection(self) -> None:
        """The old generation is logged released and freed when its last connection closes."""
        logged = Logged(self)
        old_client, old_tls, old_server, old_pump = self.loop.connect()
        old_contexts = [weakref.ref(d.context) for d in self.service.generation.domains]
        old_generation = weakref.ref(self.service.generation)
        write_identity(self.dir, self.ca, "second.example")
        self.service.reload()
        self.assertEqual(self.service.draining, {1})
        self.assertFalse(any("Generation 1 released" in line for line in logged.lines))
        old_tls.loseConnection()
        old_pump.flush()
        self.clock_settle(old_pump)
        self.assertEqual(self.service.draining, set())
        self.assertTrue(any("Generation 1 released." in line for line in logged.lines))
        # The test's own references to the connection go too.
        del old_client, old_tls, old_server, old_pump
        gc.collect()
        self.assertIsNone(old_generation())
        self.assertEqual([ref() for ref in old_contexts], [None] * len(old_contexts))

    def clock_settle(self, pump: IOPump) -> None:
        for _ in range(3):
            self.loop.clock.advance(0)
            pump.flush()

    def test_idle_generation_released_at_once(self) -> None:
        """A generation without connections is released as soon as it is replaced."""
        logged = Logged(self)
        self.service.reload()
        self.assertEqual(self.service.draining, set())
        self.assertTrue(any("Generation 1 released" in line for line in logged.lines))

    def test_refused_reload_changes_nothing(self) -> None:
        """A reload with a key that does not match keeps the running generation."""
        running = self.service.generation
        # A new certificate with its own key, but the old key stays: no match.
        leaf = make_leaf(self.ca, common_name="mismatch.example", dns=["mismatch.example"])
        with open(os.path.join(self.dir, "server.pem"), "wb") as f:
            f.write(leaf.chain_pem())
        self.assertRaises(ConfigError, self.service.reload)
        self.assertIs(self.service.generation, running)
        self.assertEqual(self.service.generation.number, 1)
        _, tls, _, _ = self.loop.connect()
        self.assertIn("CN=first.example", peer_common_name(tls))

    def test_memory_bounded_across_reloads(self) -> None:
        """200 reloads with connections opening and closing free every old generation.

        Each round reloads, opens a connection on the new generation and closes
        the one opened two rounds earlier, so there are always connections on
        old generations.  At the end, after closing everything, no old
        generation or context is alive and traced memory grew by less than
        512 KiB.
        """
        rounds = 200
        # Under trial -j, every log event is held by the worker's reporter
        # until the reactor runs, which a synchronous test never lets it do;
        # that would be measured as our growth.  Log to nowhere meanwhile.
        quiet = Logger(observer=lambda event: None)
        for module in (siptls.service, siptls.protocol, siptls.contexts):
            self.patch(module, "log", quiet)
        self.patch(ConnectionRegistry, "_log", quiet)
        # Warm caches (imports, OpenSSL tables, logging) before measuring.
        for _ in range(10):
            self.service.reload()
        gc.collect()
        rss_before = resident_bytes()
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        before, _ = tracemalloc.get_traced_memory()
        generations: list[weakref.ref[Any]] = []
        contexts: list[weakref.ref[Any]] = []
        open_: list[tuple[Any, IOPump]] = []
        for _ in range(rounds):
            self.service.reload()
            generations.append(weakref.ref(self.service.generation))
            contexts.extend(weakref.ref(d.context) for d in self.service.generation.domains)
            connection = self.loop.connect()
            self.assertTrue(connection[0].handshake_done)
            open_.append((connection[1], connection[3]))
            if len(open_) > 2:
                closing, closing_pump = open_.pop(0)
                closing.loseConnection()
                closing_pump.flush()
                self.clock_settle(closing_pump)
            self.assertLessEqual(len(self.service.draining), 3)
        for client_tls, pump in open_:
            client_tls.loseConnection()
            pump.flush()
            self.clock_settle(pump)
        del open_, client_tls, pump, connection, closing, closing_pump
        self.service.reload()
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
        growth = after - before
        alive = [ref for ref in generations if ref() is not None]
        self.assertEqual(alive, [])
        self.assertEqual([ref for ref in contexts if ref() is not None], [])
        self.assertEqual(len(self.service.registry), 0)
        self.assertEqual(self.service.draining, set())
        self.assertLess(growth, 512 * 1024, f"traced memory grew by {growth} bytes")
        rss_growth = resident_bytes() - rss_before
        # RSS includes OpenSSL's own allocations, which tracemalloc cannot see.
        self.assertLess(rss_growth, 4 * 1024 * 1024, f"RSS grew by {rss_growth} bytes")
