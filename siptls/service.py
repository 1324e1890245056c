"""The public API: a Twisted service serving SIP over TLS.

Compose it into any Twisted application::

    from siptls.service import SIPTLSService
    service = SIPTLSService.from_params({"certificate": "cert.pem", "private_key": "key.pem"},
                                        listen=["tls:127.0.0.1:5061"],
                                        application=MyApplication())
    service.setServiceParent(application)

``twistd siptls`` (:mod:`siptls.tap`) is a thin user of this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from siptls.application import OptionsResponder
from siptls.contexts import (
    ContextGeneration,
    ContextSettings,
    DomainContext,
    ServerConnectionCreator,
    SIPTLSTransport,
    build_context,
)
from siptls.interfaces import ISIPApplication
from siptls.listen import ListenAddress, parse_listen
from siptls.protocol import ConnectionLimits, ConnectionSweeper, SIPTLSFactory
from siptls.registry import ConnectionRegistry

__all__ = ["SIPTLSService", "single_domain_generation"]

log = Logger(namespace="siptls.service")


def single_domain_generation(settings: ContextSettings, number: int = 1) -> ContextGeneration:
    """A generation with one server domain used for every connection."""
    domain = build_context(settings)

    def by_socket(host: str, port: int) -> tuple[DomainContext, str]:
        return domain, "default"

    def by_name(initial: DomainContext, name: str) -> tuple[DomainContext, str] | None:
        return None

    return ContextGeneration(number, by_socket, by_name, (domain,))


class SIPTLSService(MultiService):
    """Listens for SIP over TLS on each address and serves ``application``."""

    def __init__(
        self,
        listen: Iterable[ListenAddress | str],
        generation: ContextGeneration,
        application: ISIPApplication | None = None,
        *,
        limits: ConnectionLimits | None = None,
        reactor: Any = None,
        max_connections: int = 2048,
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self.addresses: list[ListenAddress] = [
            a if isinstance(a, ListenAddress) else parse_listen(a) for a in listen
        ]
        self.application = application or OptionsResponder()
        self.limits = limits or ConnectionLimits()
        self.registry = ConnectionRegistry(reactor, max_connections)
        self.creator = ServerConnectionCreator(generation)
        self.factory = SIPTLSFactory(self.application, self.registry, reactor, self.limits)
        self.factory.noisy = False
        self.sweeper = ConnectionSweeper(self.registry, self.limits, reactor)
        self.ports: list[IListeningPort] = []

    @classmethod
    def from_params(
        cls,
        params: Mapping[str, str],
        listen: Sequence[str],
        application: ISIPApplication | None = None,
        **kwargs: Any,
    ) -> SIPTLSService:
        """Build from Kamailio-style module parameters (certificate, private_key...)."""
        settings = ContextSettings(
            name="TLSs<default>",
            certificate=params.get("certificate"),
            private_key=params.get("private_key"),
            private_key_password=params.get("private_key_password"),
        )
        return cls(listen, single_domain_generation(settings), application, **kwargs)

    @property
    def generation(self) -> ContextGeneration:
        return self.creator.generation

    def tls_factory(self) -> TLSMemoryBIOFactory:
        factory = TLSMemoryBIOFactory(self.creator, False, self.factory, clock=self.reactor)
        factory.protocol = SIPTLSTransport
        factory.noisy = False
        return factory

    def startService(self) -> None:
        super().startService()
        factory = self.tls_factory()
        for address in self.addresses:
            port = self.reactor.listenTCP(address.port, factory, interface=address.host)
            self.ports.append(port)
            bound = port.getHost()
            log.info(
                "Listening for SIP over TLS on {address} (port {port}).",
                address=str(address),
                port=bound.port,
            )
        self.sweeper.start()

    def stopService(self) -> Any:
        self.sweeper.stop()
        ports, self.ports = self.ports, []
        for port in ports:
            port.stopListening()
        return super().stopService()
