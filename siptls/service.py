"""The public API: a Twisted service serving SIP over TLS.

Compose it into any Twisted application::

    from twisted.application.service import Application
    from siptls.service import SIPTLSService

    application = Application("my-sip-app")
    service = SIPTLSService(["tls:127.0.0.1:5061"], {"config": "tls.cfg"}, MyApplication())
    service.setServiceParent(application)

``params`` are Kamailio TLS module parameters by name (``certificate``,
``private_key``, ``config``, ``tls_method``...).  Construction loads and
validates the whole configuration and raises
:class:`~siptls.errors.ConfigError` if anything is wrong; no socket is opened
until the service starts.  ``twistd siptls`` (:mod:`siptls.tap`) is a thin
user of this class.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IResolver
from twisted.internet.posixbase import PosixReactorBase
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from siptls.application import OptionsResponder
from siptls.config import TLSConfig
from siptls.contexts import (
    ContextGeneration,
    ContextSettings,
    DomainContext,
    ServerConnectionCreator,
    TLSConnectionFactory,
    build_context,
)
from siptls.errors import ConfigError
from siptls.generation import ConfigLoader, LoadResult
from siptls.interfaces import IControlTarget, ISIPApplication, ISIPConnection
from siptls.listen import DEFAULT_LISTEN, ListenAddress, parse_listen
from siptls.message import SIPMessage
from siptls.outgoing import ConnectionPool, TargetLike
from siptls.protocol import ConnectionLimits, ConnectionSweeper, SIPTLSFactory
from siptls.registry import ConnectionRegistry
from siptls.transport import listen_direct
from siptls.watch import FileWatcher, watched_files

__all__ = ["SIPTLSService", "limits_for", "single_domain_generation"]

log = Logger(namespace="siptls.service")


def single_domain_generation(settings: ContextSettings, number: int = 1) -> ContextGeneration:
    """A generation with one server domain used for every connection."""
    domain = build_context(settings)

    def by_socket(host: str, port: int) -> tuple[DomainContext, str]:
        return domain, "default"

    def by_name(initial: DomainContext, name: str) -> tuple[DomainContext, str] | None:
        return None

    return ContextGeneration(number, by_socket, by_name, (domain,))


def limits_for(config: TLSConfig) -> ConnectionLimits:
    """The connection limits the module parameters ask for."""
    return ConnectionLimits(
        con_ct_wq_max=config.con_ct_wq_max,
        ct_wq_max=config.ct_wq_max,
        max_send_buffer=config.max_send_buffer,
        handshake_timeout=config.handshake_timeout,
        connection_timeout=max(float(config.connection_timeout), 0.0),
        send_close_notify=config.send_close_notify,
        log_connections=config.log_connections,
    )


class SIPTLSService(MultiService):
    """Listens for SIP over TLS on each address and serves ``application``.

    With ``control_path`` it also serves the control channel (``siptls-ctl``)
    on that UNIX socket.
    """

    def __init__(
        self,
        listen: Iterable[ListenAddress | str] = (DEFAULT_LISTEN,),
        params: Mapping[str, str] | None = None,
        application: ISIPApplication | None = None,
        *,
        workdir: str | None = None,
        reactor: Any = None,
        control_path: str | None = None,
        resolver: IResolver | None = None,
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self.addresses: list[ListenAddress] = [
            a if isinstance(a, ListenAddress) else parse_listen(a) for a in listen
        ]
        self.loader = ConfigLoader(
            params or {}, [(a.host, a.port) for a in self.addresses], workdir
        )
        self.current: LoadResult = self.loader.load(1)
        config = self.current.config
        self.application = application or OptionsResponder()
        self.limits = limits_for(config)
        self.registry = ConnectionRegistry(reactor, config.tls_max_connections)
        self.creator = ServerConnectionCreator(self.current.generation)
        self.factory = SIPTLSFactory(self.application, self.registry, reactor, self.limits)
        self.factory.noisy = False
        # Look often enough that a short (test) handshake timeout is kept.
        sweep_every = min(1.0, max(0.05, self.limits.handshake_timeout / 2))
        self.sweeper = ConnectionSweeper(self.registry, self.limits, reactor, sweep_every)
        self.ports: list[IListeningPort] = []
        self.started_at: float | None = None
        # Old generations that still have live connections.  Only their
        # numbers: the connections keep the contexts alive, and nothing here
        # may keep a generation alive after its last connection closes.
        self.draining: set[int] = set()
        self.registry.add_release_observer(self._generation_released)
        self.watcher = FileWatcher(
            lambda: watched_files(self.config),
            self._reload_on_change,
            reactor,
            config.watch_interval,
        )
        self._previous_sighup: Any = None
        self.control: Any = None
        if control_path is not None:
            from siptls.control.locator import ControlLocator
            from siptls.control.server import ControlService

            target = ServiceControl(self)
            self.control = ControlService(
                control_path, lambda: ControlLocator(self.registry, target), reactor
            )
            self.control.setServiceParent(self)
        self._init_outgoing(resolver)

    @property
    def generation(self) -> ContextGeneration:
        return self.creator.generation

    @property
    def config(self) -> TLSConfig:
        return self.current.config

    def notices(self) -> list[str]:
        """What an operator should be told about the loaded configuration."""
        notes = list(self.current.loaded.warnings)
        generated = self.current.self_signed
        if generated is not None:
            notes.append(
                f"{'Generated' if generated.created else 'Using'} the self-signed certificate "
                f"{generated.certificate} (SHA-256 {generated.fingerprint}); configure a real "
                "certificate for production."
            )
        if self.config.keylog_file:
            notes.append(
                f"TLS session keys are being written to {self.config.keylog_file} (keylog_file): "
                "anyone who can read it can decrypt this server's traffic."
            )
        return notes

    def reload(self) -> int:
        """Load the configuration again and use it for new connections.

        Returns the new generation number.  Raises ConfigError, leaving the
        running generation untouched, if anything in the new one is wrong.
        """
        number = self.generation.number + 1
        try:
            result = self.loader.load(number)
        except ConfigError as error:
            log.error(
                "Reload refused, generation {generation} stays in use: {error}",
                generation=self.generation.number,
                error=str(error),
            )
            raise
        self.current = result
        previous = self.creator.swap(result.generation)
        if previous.number in self.registry.by_generation():
            self.draining.add(previous.number)
        else:
            self._generation_released(previous.number, idle=True)
        for note in result.loaded.warnings:
            log.warn("{note}", note=note)
        log.info(
            "Loaded TLS configuration generation {generation} ({count} domains).",
            generation=number,
            count=len(result.config.domains),
        )
        return number

    def tls_factory(self) -> TLSMemoryBIOFactory:
        return TLSConnectionFactory(self.creator, False, self.factory, clock=self.reactor)

    def startService(self) -> None:
        super().startService()
        # Before listening: a SIGHUP sent once the port is seen open must not
        # meet Python's default action (terminate).
        self._install_sighup()
        for note in self.notices():
            log.warn("{note}", note=note)
        factory = self.tls_factory()
        for address in self.addresses:
            port = self._listen(address, factory)
            self.ports.append(port)
            log.info(
                "Listening for SIP over TLS on {address}.",
                address=str(ListenAddress(address.host, getattr(port.getHost(), "port", 0))),
            )
        self.started_at = self.reactor.seconds()
        self.sweeper.start()
        if self.config.watch_certificates:
            self.watcher.start()

    def _listen(self, address: ListenAddress, factory: TLSMemoryBIOFactory) -> IListeningPort:
        from twisted.internet import reactor as global_reactor

        if self.reactor is global_reactor and isinstance(self.reactor, PosixReactorBase):
            return listen_direct(self.reactor, address.port, factory, address.host)
        return self.reactor.listenTCP(address.port, factory, interface=address.host)

    def stopService(self) -> Any:
        self.sweeper.stop()
        self.watcher.stop()
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        ports, self.ports = self.ports, []
        for port in ports:
            port.stopListening()
        return super().stopService()

    def _install_sighup(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        from twisted.internet import reactor as global_reactor

        if self.reactor is not global_reactor:
            return

        def on_sighup(signum: int, frame: Any) -> None:
            self.reactor.callFromThread(self._reload_on_signal)

        self._previous_sighup = signal.signal(signal.SIGHUP, on_sighup)

    # -- outgoing connections (siptls.outgoing) -----------------------------

    def _init_outgoing(self, resolver: IResolver | None) -> None:
        factory = SIPTLSFactory(self.application, self.registry, self.reactor, self.limits, "out")
        factory.queue_account = self.factory.queue_account  # ct_wq_max counts both ways
        self.outgoing = ConnectionPool(factory, lambda: self.generation, self.reactor, resolver)
        self.outgoing.setServiceParent(self)

    def send(
        self,
        message: bytes | SIPMessage,
        target: TargetLike,
        *,
        server_name: str | None = None,
        server_id: str | None = None,
    ) -> Deferred[ISIPConnection]:
        """Send ``message`` to ``target`` over TLS; see :meth:`siptls.outgoing.ConnectionPool.send`.

        ``target`` is a ``sips:`` URI, a ``sip:...;transport=tls`` URI,
        ``"host:port"`` or ``(host, port)``.  ``server_id`` and
        ``server_name`` choose the client TLS domain as Kamailio's XAVPs do;
        ``server_name`` also replaces the target host as SNI and as the name
        the peer certificate must carry.
        """
        return self.outgoing.send(  # type: ignore[return-value]
            message, target, server_name=server_name, server_id=server_id
        )

    def _reload_on_signal(self) -> None:
        log.info("SIGHUP: reloading the TLS configuration.")
        try:
            self.reload()
        except ConfigError:
            pass  # reload() logged why; the running generation stays.

    def _reload_on_change(self, changed: list[str]) -> None:
        """The watcher saw ``changed`` files change: reload (it logs a refusal once)."""
        log.info("Reloading the TLS configuration: {files} changed.", files=", ".join(changed))
        self.reload()

    def _generation_released(self, number: int, idle: bool = False) -> None:
        """The last connection of generation ``number`` closed (or it never had one)."""
        if idle:
            log.info("Generation {generation} released (it had no connections).", generation=number)
            return
        if number not in self.draining:
            return  # the current generation merely has no connections right now
        self.draining.discard(number)
        log.info("Generation {generation} released.", generation=number)


@implementer(IControlTarget)
class ServiceControl:
    """The running :class:`SIPTLSService` as the control channel sees it."""

    def __init__(self, service: SIPTLSService) -> None:
        self.service = service

    def generation(self) -> int:
        return self.service.generation.number

    def uptime(self) -> float:
        started = self.service.started_at
        if started is None:
            return 0.0
        return float(self.service.reactor.seconds() - started)

    def options(
        self,
    ) -> tuple[list[tuple[str, object]], list[tuple[str, list[tuple[str, object]]]]]:
        """Every effective module parameter, and each domain's effective settings."""
        config = self.service.config
        hidden = {"domains", "params", "config_files"}
        globals_ = [
            (field.name, getattr(config, field.name))
            for field in attrs.fields(type(config))
            if field.name not in hidden
        ]
        globals_.append(("listen", " ".join(str(a) for a in self.service.addresses)))
        globals_.append(("generation", self.service.generation.number))
        domains = []
        for domain_context in self.service.generation.domains:
            domains.append((domain_context.name, _domain_options(domain_context)))
        return globals_, domains

    def reload(self) -> int:
        return self.service.reload()


def _domain_options(domain: DomainContext) -> list[tuple[str, object]]:
    settings = domain.settings
    record = domain.record
    method = getattr(record, "method", None)
    verify = getattr(record, "verify_client", None)
    entries: list[tuple[str, object]] = [
        ("section", settings.section),
        ("defined_at", _origin(record)),
        ("method", method),
        ("min_version", settings.min_version),
        ("max_version", settings.max_version),
        ("certificate", settings.certificate),
        ("private_key", settings.private_key),
        ("ca_list", settings.ca_list),
        ("ca_path", settings.ca_path),
        ("crl", settings.crl),
        ("verify_client", verify),
        ("verify_peer", settings.verify_peer),
        ("require_peer_certificate", settings.require_peer_certificate),
        ("accept_unknown_ca", settings.accept_unknown_ca),
        ("verify_depth", settings.verify_depth),
        ("cipher_list", settings.cipher_list),
        ("server_name", getattr(record, "server_name", None)),
        ("server_name_mode", getattr(record, "server_name_mode", None)),
        ("server_id", getattr(record, "server_id", None)),
    ]
    if domain.certificate is not None:
        entries.append(("certificate_subject", domain.certificate.subject))
        entries.append(("certificate_not_after", domain.certificate.not_after.isoformat()))
    return entries


def _origin(record: Any) -> str | None:
    source = getattr(record, "source", None)
    if source is None:
        return None
    line = getattr(record, "line", None)
    return f"{source}:{line}" if line is not None else str(source)
