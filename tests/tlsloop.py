"""In-memory TLS connections between a siptls server and a test client."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test.iosim import FakeTransport, IOPump, connectedServerAndClient
from zope.interface import implementer

from siptls.contexts import ContextGeneration, ContextSettings, SIPTLSTransport
from siptls.interfaces import ISIPApplication
from siptls.protocol import ConnectionLimits, SIPTLSFactory
from siptls.registry import ConnectionRegistry
from siptls.service import single_domain_generation


@implementer(IHandshakeListener)
class RecordingClient(Protocol):
    """A client that records what it receives and whether the handshake completed."""

    def __init__(self) -> None:
        self.received = b""
        self.handshake_done = False
        self.lost: Any = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def handshakeCompleted(self) -> None:
        self.handshake_done = True

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = reason


class Server:
    """A siptls server side: factory, registry and clock, without sockets."""

    def __init__(
        self,
        generation: ContextGeneration,
        application: ISIPApplication,
        limits: ConnectionLimits | None = None,
        clock: Clock | None = None,
        max_connections: int = 2048,
    ) -> None:
        self.clock = clock or Clock()
        self.registry = ConnectionRegistry(self.clock, max_connections)
        self.sip_factory = SIPTLSFactory(application, self.registry, self.clock, limits)
        from siptls.contexts import ServerConnectionCreator

        self.creator = ServerConnectionCreator(generation)
        self.tls_factory = TLSMemoryBIOFactory(
            self.creator, False, self.sip_factory, clock=self.clock
        )
        self.tls_factory.protocol = SIPTLSTransport

    def connect(
        self,
        client_creator: Any,
        client: Protocol | None = None,
        local: tuple[str, int] = ("127.0.0.1", 5061),
        peer: tuple[str, int] = ("127.0.0.1", 40000),
        greet: bool = True,
    ) -> tuple[Any, SIPTLSTransport, IOPump]:
        """Connect a TLS client; return (client TLS protocol, server TLS protocol, pump)."""
        client = client or RecordingClient()
        client_factory = TLSMemoryBIOFactory(
            client_creator, True, Factory.forProtocol(lambda: client), clock=self.clock
        )
        host = IPv4Address("TCP", *local)
        remote = IPv4Address("TCP", *peer)

        def server_transport(protocol: Any) -> FakeTransport:
            return FakeTransport(protocol, True, hostAddress=host, peerAddress=remote)

        def client_transport(protocol: Any) -> FakeTransport:
            return FakeTransport(protocol, False, hostAddress=remote, peerAddress=host)

        client_tls, server_tls, pump = connectedServerAndClient(
            lambda: self.tls_factory.buildProtocol(remote),
            lambda: client_factory.buildProtocol(host),
            clientTransportFactory=client_transport,
            serverTransportFactory=server_transport,
            greet=greet,
            clock=self.clock,
        )
        return client_tls, server_tls, pump


def trusting_client(ca_pem: bytes, hostname: str = "localhost", **kwargs: Any) -> Any:
    return optionsForClientTLS(hostname, Certificate.loadPEM(ca_pem), **kwargs)


def generation_for(
    ca: Any, tmpdir: str, hostname: str = "localhost", **settings: Any
) -> ContextGeneration:
    """A one-domain generation serving a trustme-issued certificate for ``hostname``."""
    import os

    leaf = ca.issue_cert(hostname, "127.0.0.1")
    cert_path = os.path.join(tmpdir, "server.pem")
    key_path = os.path.join(tmpdir, "server.key")
    leaf.cert_chain_pems[0].write_to_path(cert_path)
    for pem in leaf.cert_chain_pems[1:]:
        pem.write_to_path(cert_path, append=True)
    leaf.private_key_pem.write_to_path(key_path)
    return single_domain_generation(
        ContextSettings(
            name="TLSs<default>", certificate=cert_path, private_key=key_path, **settings
        )
    )


def in_memory_server(
    case: Any,
    application: ISIPApplication,
    limits: ConnectionLimits | None = None,
    max_connections: int = 2048,
) -> tuple[Server, Any]:
    """A one-domain in-memory server for ``case`` (a trial TestCase), and its trustme CA."""
    import os

    import trustme

    ca = trustme.CA()
    path = case.mktemp()
    os.makedirs(path)
    server = Server(generation_for(ca, path), application, limits, max_connections=max_connections)
    return server, ca


def connect_client(
    server: Server, ca: Any, client: RecordingClient | None = None, **kwargs: Any
) -> tuple[RecordingClient, Any, SIPTLSTransport, IOPump]:
    """Connect a client trusting ``ca`` and finish the handshake."""
    client = client or RecordingClient()
    client_tls, server_tls, pump = server.connect(
        trusting_client(ca.cert_pem.bytes()), client, **kwargs
    )
    pump.flush()
    return client, client_tls, server_tls, pump


def capture_logs(case: Any) -> list[dict[str, Any]]:
    """Every log event emitted while ``case`` runs."""
    from twisted.logger import globalLogPublisher

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    case.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events
