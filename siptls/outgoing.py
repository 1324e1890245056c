"""Outgoing SIP-over-TLS connections: choosing, opening, checking and reusing them.

Theory of operation
-------------------
:meth:`ConnectionPool.send` takes a SIP message and a destination (a
``sips:`` URI, a ``sip:...;transport=tls`` URI, ``host:port``, a
``(host, port)`` pair or a :class:`~siptls.target.Target`).  It

1. parses the destination and resolves it with RFC 3263 (SRV
   ``_sips._tcp`` then A/AAAA; an IP literal or an explicit port skips SRV);
2. for each address, picks the client TLS domain the way Kamailio does
   (``server_id``, then ``server_name`` with ``server_name_mode``, then the
   ``[client:IP:PORT]`` of the *destination*, then ``[client:any]`` by name,
   then ``[client:default]``);
3. reuses a flow (connecting or established) with the same key, or opens a
   new one, trying the next address when TCP cannot connect;
4. queues the message until the handshake completes (bounded by
   ``con_ct_wq_max`` per connection and ``ct_wq_max`` in all), then writes
   queued messages in order.

**Reuse key.**  A flow is reused only for the same destination address *and*
client domain *and* server name (SNI / reference identity): reusing a
connection made with another client certificate or checked against another
name would send a message to a peer whose identity was never checked for it
(OpenSIPS issue 1651).  This is Kamailio's ``tls_connection_match_domain=1``
behaviour.  Inbound connections from the same peer address are **not**
reused: their source port is almost always ephemeral (so the address would
not match the peer's listening port anyway), and their peer certificate was
never checked against the name we want to reach.

**SNI.**  The server name sent is the explicit ``server_name`` or else the
host of the destination, IDNA-encoded; never an IP literal (RFC 6066 §3).
Kamailio sends SNI only when an XAVP sets it; siptls always sends the name of
the SIP domain being reached.

**Identity.**  When the client domain verifies the server certificate
(``verify_certificate``/``require_certificate``), the chain is checked by
OpenSSL (CA, CRL, depth), and, beyond Kamailio, the leaf certificate is
checked against the *reference identity* with RFC 5922 §7 rules
(:func:`siptls.identity.verify_identity`): the explicit ``server_name`` or the
host of the destination, never the resolved address nor an SRV target.  Any
error during the check rejects the handshake (a ``bad_certificate`` alert) and
the send fails with :class:`~siptls.errors.IdentityError`.  A client domain
with ``verify_identity = no`` checks the chain only; wildcard DNS names count
only with ``identity_wildcards = yes``.  A destination given as an IP literal
with no ``server_name`` has the IP as its reference: it is matched against IP
address subjectAltNames when the module parameter ``identity_check_ip`` is on,
and not checked by name at all (chain only, logged) when it is off, the
default, because SIP peers addressed by IP rarely carry IP SANs.  A domain
that does not verify the chain checks no identity either: a name check on an
unverified certificate proves nothing.

**TLS 1.3.**  The client's handshake completes before the server has judged
our client certificate; a server that rejects it closes the connection just
after.  The Deferred from :meth:`send` therefore means "handshake done, peer
identity checked, message written", not "the server accepted us"; wait for
the response (or ``connectionClosed``) for that.

**Keep-alive.**  With the module parameter ``keepalive_interval`` above 0,
each outgoing flow sends an RFC 5626 double-CRLF ping every that many
seconds and expects the single-CRLF pong within ``keepalive_timeout``
seconds; a flow that does not answer is closed with the reason
``keep-alive: no pong ...`` (``connectionClosed`` sees it).

Embedding
---------
See ``docs/embedding.rst`` for a complete example; in short::

    service = SIPTLSService(["tls:127.0.0.1:5061"], {"config": "tls.cfg"}, MyApp())
    service.setServiceParent(parent)          # any MultiService
    connection = await service.send(options_request("sips:peer.example.com"),
                                    "sips:peer.example.com", server_id="carrier")
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from OpenSSL import SSL, crypto
from twisted.application.service import Service
from twisted.internet import error as netError
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IResolver
from twisted.internet.protocol import ClientFactory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from siptls.config import format_address
from siptls.contexts import (
    ContextGeneration,
    DomainContext,
    SIPTLSTransport,
    TLSConnectionFactory,
    _make_verify_callback,
)
from siptls.errors import IdentityError, ResolutionError, SendError
from siptls.hostnames import normalise_domain, parse_ip
from siptls.identity import IdentityVerdict, verify_identity
from siptls.message import SIPMessage
from siptls.protocol import SIPTLSFactory, SIPTLSProtocol
from siptls.resolve import TargetResolver
from siptls.target import DEFAULT_PORT, Target, parse_target

__all__ = [
    "ConnectionPool",
    "FlowKey",
    "OutgoingConnectionCreator",
    "OutgoingProtocol",
    "TargetLike",
    "as_target",
    "options_request",
]

log = Logger(namespace="siptls.outgoing")

TargetLike = str | Target | tuple[str, int]
"""What :meth:`ConnectionPool.send` accepts as a destination."""

FlowKey = tuple[str, int, str, str | None]
"""``(ip, port, client domain name, server name)``: what makes a flow reusable."""

_PING = b"\r\n\r\n"

_Choice = tuple[DomainContext, str, ContextGeneration]
_Candidate = tuple[tuple[str, int], FlowKey, _Choice]


def as_target(target: TargetLike) -> Target:
    """Turn any accepted destination spelling into a :class:`Target`."""
    if isinstance(target, Target):
        return target
    if isinstance(target, tuple):
        host, port = target
        address = parse_ip(host)
        if address is not None:
            return Target(host=str(address), port=int(port), is_ip=True, server_name=None)
        name = normalise_domain(host)
        return Target(host=name, port=int(port), is_ip=False, server_name=name)
    return parse_target(target)


def options_request(
    uri: str,
    *,
    from_uri: str = "sip:siptls@localhost",
    call_id: str | None = None,
    cseq: int = 1,
    via_host: str = "siptls.invalid",
) -> bytes:
    """A minimal OPTIONS request for ``uri``, ready for :meth:`ConnectionPool.send`.

    The Via carries a fresh RFC 3261 branch and ``;rport``; the peer answers
    on the same connection (RFC 3261 §18.2.2), so ``via_host`` need not be
    reachable.
    """
    call_id = call_id or f"{uuid.uuid4().hex}@siptls"
    branch = "z9hG4bK" + uuid.uuid4().hex[:16]
    tag = uuid.uuid4().hex[:8]
    return (
        f"OPTIONS {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS {via_host};branch={branch};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <{from_uri}>;tag={tag}\r\n"
        f"To: <{uri}>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} OPTIONS\r\n"
        f"Accept: application/sdp\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


@implementer(IOpenSSLClientConnectionCreator)
class OutgoingConnectionCreator:
    """Makes the client ``SSL.Connection`` of one outgoing flow.

    One creator per connection attempt, closed over the chosen client domain,
    the SNI to send and the reference identity to check.  ``reference`` is
    ``None`` when no identity check is wanted.
    """

    def __init__(
        self,
        domain: DomainContext,
        reason: str,
        generation: ContextGeneration | None,
        server_name: str | None,
        reference: str | None,
        allow_wildcards: bool = False,
    ) -> None:
        self.domain = domain
        self.reason = reason
        self.generation = generation
        self.server_name = server_name
        self.reference = reference
        self.allow_wildcards = allow_wildcards
        self.verdict: IdentityVerdict | None = None

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        assert isinstance(tlsProtocol, SIPTLSTransport)
        tlsProtocol.domain = self.domain
        tlsProtocol.domain_reason = self.reason
        tlsProtocol.generation = self.generation
        connection = SSL.Connection(self.domain.context, None)
        if self.server_name and parse_ip(self.server_name) is None:
            connection.set_tlsext_host_name(self.server_name.encode("idna"))
        mode = self.domain.verify_mode
        if mode != SSL.VERIFY_NONE and self.reference is not None:
            connection.set_verify(mode, self._verify_callback(tlsProtocol))
        return connection

    def _verify_callback(
        self, tlsProtocol: SIPTLSTransport
    ) -> Callable[[SSL.Connection, crypto.X509, int, int, int], bool]:
        chain = _make_verify_callback(self.domain.settings)

        def verify(
            connection: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int
        ) -> bool:
            if not chain(connection, cert, errno, depth, ok):
                return False
            if depth != 0:
                return True
            try:
                reference = self.reference
                assert reference is not None
                verdict = verify_identity(
                    cert.to_cryptography(), reference, allow_wildcards=self.allow_wildcards
                )
            except Exception as exc:  # fail closed, whatever went wrong
                verdict = IdentityVerdict(
                    False, str(self.reference), None, f"identity check failed: {exc}"
                )
            self.verdict = verdict
            if verdict:
                return True
            tlsProtocol.failVerification(
                Failure(IdentityError(verdict.reason, reference=verdict.reference))
            )
            return False

        return verify


class OutgoingProtocol(SIPTLSProtocol):
    """An outgoing connection: a :class:`SIPTLSProtocol` tied to its flow.

    ``identity`` is the RFC 5922 verdict (``None`` when no check was made);
    ``key`` is the flow's reuse key; ``target`` the destination asked for.
    """

    identity: IdentityVerdict | None = None
    pings_sent = 0
    pongs_received = 0

    def __init__(self, factory: SIPTLSFactory, flow: _Flow) -> None:
        super().__init__(factory, "out")
        self.flow = flow
        self.key = flow.key
        self.target = flow.target
        self._keepalive: LoopingCall | None = None
        self._pong_timer: Any = None

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.record is not None:
            self.flow.connected(self)

    def handshakeCompleted(self) -> None:
        self.identity = self.flow.creator.verdict
        super().handshakeCompleted()
        record = self.record
        if record is None or self.transport is None:
            return
        if self.identity is not None:
            record.verification = (
                f"{record.verification}; identity {'ok' if self.identity else 'failed'}"
            )
        pool = self.flow.pool
        interval = pool.keepalive_interval()
        if interval > 0:
            self._keepalive = LoopingCall(self._ping)
            self._keepalive.clock = self.factory.clock
            self._keepalive.start(interval, now=False)
        self.flow.opened(self)

    def dataReceived(self, data: bytes) -> None:
        if self._pong_timer is not None and self.framer.buffered == 0 and data[:2] == b"\r\n":
            if data[:4] != _PING:
                # RFC 5626 §4.4.1: a single CRLF answers our ping.  Taken here
                # because the framer waits to see whether a CRLF starts a ping.
                self._pong()
                data = data[2:]
                if not data:
                    if self.record is not None:
                        self.record.last_activity = self.factory.clock.seconds()
                    return
        super().dataReceived(data)

    def connectionLost(self, reason: Failure = netError.ConnectionDone) -> None:  # type: ignore[assignment]
        self._stop_keepalive()
        if self._closing_reason is None and isinstance(reason, Failure):
            if reason.check(IdentityError):
                self._closing_reason = f"peer identity rejected: {reason.getErrorMessage()}"
        why = self._closing_reason
        # Forget the flow first: connectionClosed handlers may send again,
        # and must get a new connection rather than this dead one.
        self.flow.pool._forget(self.flow)
        super().connectionLost(reason)
        self.flow.lost(self, reason, why)

    # -- RFC 5626 keep-alive -------------------------------------------------

    def _ping(self) -> None:
        if self.transport is None or self._pong_timer is not None:
            return
        self.transport.write(_PING)
        self.pings_sent += 1
        timeout = self.flow.pool.keepalive_timeout()
        self._pong_timer = self.factory.clock.callLater(timeout, self._dead, timeout)

    def _pong(self) -> None:
        timer, self._pong_timer = self._pong_timer, None
        if timer is not None and timer.active():
            timer.cancel()
            self.pongs_received += 1

    def _dead(self, timeout: float) -> None:
        self._pong_timer = None
        log.warn(
            "Outgoing flow {connection_id} to {peer} is dead: no keep-alive pong within "
            "{timeout:g} s.",
            connection_id=self.id,
            peer=self.remote,
            timeout=timeout,
        )
        self.abortConnection(f"keep-alive: no pong within {timeout:g} s (RFC 5626)")

    def _stop_keepalive(self) -> None:
        if self._keepalive is not None and self._keepalive.running:
            self._keepalive.stop()
        self._keepalive = None
        self._pong()


class _FlowFactory(ClientFactory):
    """The per-attempt factory: builds the flow's protocol, reports TCP failures."""

    def __init__(self, flow: _Flow) -> None:
        self.flow = flow
        self.noisy = False

    def buildProtocol(self, addr: Any) -> OutgoingProtocol:
        return OutgoingProtocol(self.flow.pool.factory, self.flow)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.flow.connect_failed(reason)


class _Flow:
    """One outgoing flow from the first send to its close.

    Before TCP connects, messages wait here (bounded by ``con_ct_wq_max``);
    afterwards they go to the protocol, which queues them until the
    handshake.  ``waiters`` fire when the handshake completes or fail when
    the flow dies before it did.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        key: FlowKey,
        target: Target,
        creator: OutgoingConnectionCreator,
    ) -> None:
        self.pool = pool
        self.key = key
        self.target = target
        self.creator = creator
        self.protocol: OutgoingProtocol | None = None
        self.established = False
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.waiters: list[Deferred[OutgoingProtocol]] = []
        self.connector: Any = None
        self._remaining: list[_Candidate] = []
        self._failures: list[str] = []
        self._make_creator: Callable[[_Choice], OutgoingConnectionCreator] | None = None

    def start(
        self,
        candidates: list[_Candidate],
        make_creator: Callable[[_Choice], OutgoingConnectionCreator],
    ) -> None:
        """Connect to the first address; on TCP failure, to the next (RFC 3263 §4.3)."""
        self._remaining = list(candidates)
        self._make_creator = make_creator
        self._attempt()

    def _attempt(self) -> None:
        address, key, choice = self._remaining.pop(0)
        assert self._make_creator is not None
        self.pool._forget(self)
        self.key, self.creator = key, self._make_creator(choice)
        self.pool.flows[key] = self
        tls = TLSConnectionFactory(self.creator, True, _FlowFactory(self), clock=self.pool.reactor)
        domain, reason, _generation = choice
        log.info(
            "Connecting to {address} for {target} (client domain {domain}: {reason}; "
            "server name {sni}).",
            address=format_address(address),
            target=self.target.host,
            domain=domain.name,
            reason=reason,
            sni=key[3],
        )
        self.connector = self.pool.reactor.connectTCP(
            address[0], address[1], tls, timeout=self.pool.connect_timeout
        )

    def send(self, data: bytes) -> Deferred[OutgoingProtocol]:
        protocol = self.protocol
        if self.established and protocol is not None:
            protocol.send(data)
            return _succeed(protocol)
        if protocol is not None:
            protocol.send(data)  # queued by the protocol until the handshake
        else:
            limit = self.pool.factory.limits.con_ct_wq_max
            if self.pending_bytes + len(data) > limit:
                raise SendError(
                    f"the clear-text queue for {self.key[0]}:{self.key[1]} is full: "
                    f"{self.pending_bytes} bytes wait for the connection, con_ct_wq_max is "
                    f"{limit}."
                )
            self.pending.append(data)
            self.pending_bytes += len(data)
        waiter: Deferred[OutgoingProtocol] = Deferred()
        self.waiters.append(waiter)
        return waiter

    def connected(self, protocol: OutgoingProtocol) -> None:
        self.protocol = protocol
        pending, self.pending, self.pending_bytes = self.pending, [], 0
        try:
            for data in pending:
                protocol.send(data)
        except SendError as error:
            self._fail(Failure(error))

    def opened(self, protocol: OutgoingProtocol) -> None:
        self.established = True
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            waiter.callback(protocol)

    def connect_failed(self, reason: Failure) -> None:
        self._failures.append(f"{self.key[0]}:{self.key[1]}: {reason.getErrorMessage()}")
        if self._remaining:
            self._attempt()
            return
        self._fail(
            Failure(
                SendError(
                    f"could not connect to {self.target.host} (tried {'; '.join(self._failures)})."
                )
            )
        )

    def lost(self, protocol: OutgoingProtocol, reason: Failure, why: str | None) -> None:
        self.pool._forget(self)
        if not self.established:
            value = reason.value if isinstance(reason, Failure) else reason
            if isinstance(value, IdentityError):
                self._fail(Failure(value))
            else:
                text = why or protocol._closing_reason or str(value)
                self._fail(
                    Failure(
                        SendError(
                            f"the TLS connection to {protocol.remote[0]}:{protocol.remote[1]} "
                            f"failed before its handshake completed: {text}"
                        )
                    )
                )

    def _fail(self, reason: Failure) -> None:
        self.pool._forget(self)
        waiters, self.waiters = self.waiters, []
        self.pending, self.pending_bytes = [], 0
        for waiter in waiters:
            waiter.errback(reason)
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.abortConnection("the flow failed")


def _succeed(value: OutgoingProtocol) -> Deferred[OutgoingProtocol]:
    d: Deferred[OutgoingProtocol] = Deferred()
    d.callback(value)
    return d


class ConnectionPool(Service):
    """Opens, checks and reuses outgoing SIP-over-TLS flows.

    ``factory`` is a :class:`~siptls.protocol.SIPTLSFactory` (its application
    receives responses and connection events; its registry lists the flows);
    ``generation`` returns the configuration generation in use (read at each
    connect, so a reload applies to new flows); ``resolver`` is an
    ``IResolver`` (default: ``twisted.names.client.createResolver()``, created
    on first use); ``connect_timeout`` bounds each TCP connect, in seconds.
    """

    def __init__(
        self,
        factory: SIPTLSFactory,
        generation: Callable[[], ContextGeneration],
        reactor: Any,
        resolver: IResolver | None = None,
        *,
        connect_timeout: float = 10.0,
    ) -> None:
        self.factory = factory
        self._generation = generation
        self.reactor = reactor
        self._resolver = resolver
        self._target_resolver: TargetResolver | None = None
        self.connect_timeout = connect_timeout
        self.flows: dict[FlowKey, _Flow] = {}

    # -- public --------------------------------------------------------------

    def send(
        self,
        message: bytes | SIPMessage,
        target: TargetLike,
        *,
        server_name: str | None = None,
        server_id: str | None = None,
    ) -> Deferred[OutgoingProtocol]:
        """Send ``message`` to ``target`` over a reused or new TLS flow.

        Fires with the connection (an :class:`~siptls.interfaces.ISIPConnection`,
        ``direction == "out"``) once the handshake completed, the peer identity
        was checked and the message was written.  Fails with
        :class:`~siptls.errors.ResolutionError` (bad or unresolvable target),
        :class:`~siptls.errors.IdentityError` (the peer certificate is for
        another name), or :class:`~siptls.errors.SendError` (cannot connect,
        handshake failed, queue full).
        """
        data = message.to_bytes() if isinstance(message, SIPMessage) else bytes(message)
        return Deferred.fromCoroutine(self._send(data, target, server_name, server_id))

    def connection_for(self, key: FlowKey) -> OutgoingProtocol | None:
        """The live (connecting or established) connection of flow ``key``, if any."""
        flow = self.flows.get(key)
        return flow.protocol if flow is not None else None

    def keepalive_interval(self) -> float:
        return float(getattr(self._generation().config, "keepalive_interval", 0.0) or 0.0)

    def keepalive_timeout(self) -> float:
        return float(getattr(self._generation().config, "keepalive_timeout", 10.0) or 10.0)

    def stopService(self) -> Any:
        super().stopService()
        for flow in list(self.flows.values()):
            if flow.connector is not None and flow.protocol is None:
                flow.connector.disconnect()
        return None

    # -- internals -----------------------------------------------------------

    @property
    def resolver(self) -> TargetResolver:
        if self._target_resolver is None:
            resolver = self._resolver
            if resolver is None:
                from twisted.names.client import createResolver

                resolver = createResolver()
            self._target_resolver = TargetResolver(resolver)
        return self._target_resolver

    async def _send(
        self, data: bytes, target: TargetLike, server_name: str | None, server_id: str | None
    ) -> OutgoingProtocol:
        try:
            parsed = as_target(target)
        except ValueError as exc:
            raise ResolutionError(f"{target!r} is not a SIP target: {exc}") from None
        name = _server_name(server_name, parsed)
        if parsed.is_ip:
            addresses = [(parsed.host, parsed.port or DEFAULT_PORT)]
        else:
            addresses = await self.resolver.resolve(parsed)
        # Reuse a live flow to any of the addresses before opening a new one.
        candidates = [(address, *self._key(address, name, server_id)) for address in addresses]
        for _address, key, _choice in candidates:
            flow = self.flows.get(key)
            if flow is not None:
                return await flow.send(data)
        flow = self._open(parsed, name, candidates)
        return await flow.send(data)

    def _key(
        self, address: tuple[str, int], name: str | None, server_id: str | None
    ) -> tuple[FlowKey, _Choice]:
        generation = self._generation()
        select = generation.select_client
        if select is None:
            raise SendError("the TLS configuration has no client domains.")
        domain, reason = select(address[0], address[1], name, server_id)
        return (address[0], address[1], domain.name, name), (domain, reason, generation)

    def _open(self, target: Target, name: str | None, candidates: list[_Candidate]) -> _Flow:
        (_address, key, choice) = candidates[0]
        flow = _Flow(self, key, target, self._creator(target, name, *choice))
        flow.start(candidates, lambda c: self._creator(target, name, *c))
        return flow

    def _creator(
        self,
        target: Target,
        name: str | None,
        domain: DomainContext,
        reason: str,
        generation: ContextGeneration,
    ) -> OutgoingConnectionCreator:
        record = domain.record
        check = bool(getattr(record, "verify_identity", True))
        wildcards = bool(getattr(record, "identity_wildcards", False))
        reference: str | None = name if name is not None else target.host
        if reference is not None and parse_ip(reference) is not None:
            config = generation.config
            if not getattr(config, "identity_check_ip", False):
                reference = None
        if not check:
            reference = None
        return OutgoingConnectionCreator(
            domain, reason, generation, name, reference, allow_wildcards=wildcards
        )

    def _forget(self, flow: _Flow) -> None:
        if self.flows.get(flow.key) is flow:
            del self.flows[flow.key]


def _server_name(explicit: str | None, target: Target) -> str | None:
    """The SNI and reference identity: the explicit name, else the target's host name."""
    if explicit is None:
        return target.server_name
    address = parse_ip(explicit)
    if address is not None:
        return str(address)
    try:
        return normalise_domain(explicit)
    except ValueError as exc:
        raise ResolutionError(
            f"The server_name {explicit!r} is not a valid host name: {exc}", name=explicit
        ) from None
