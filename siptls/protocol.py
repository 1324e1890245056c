"""The Twisted protocol between a TLS transport and a SIP application.

Theory of operation
-------------------
:class:`SIPTLSProtocol` sits inside Twisted's ``TLSMemoryBIOProtocol``
(our :class:`siptls.contexts.SIPTLSTransport`): it receives clear text,
feeds it to a :class:`siptls.framing.SIPFramer`, parses each framed message
and hands it to the :class:`siptls.interfaces.ISIPApplication`.  It is also
the :class:`siptls.interfaces.ISIPConnection` the application answers on.

All messages of one read are handled before anything is written: replies
produced meanwhile are collected and written with one ``write``, which is
what makes pipelined traffic cheap.  Data sent before the handshake
completes is queued, bounded per connection (``con_ct_wq_max``) and in total
(``ct_wq_max``), and written in order when the handshake completes.  Output
the peer does not read is bounded too: once the TCP buffer is full the
connection stops reading, and a connection whose unread output grows past
``max_send_buffer`` is closed.

Timeouts (handshake, idle) are enforced by :class:`ConnectionSweeper`,
which looks over the registry once a second instead of keeping a timer per
connection.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from OpenSSL import SSL
from twisted.internet import error as netError
from twisted.internet.interfaces import IHandshakeListener, IPushProducer, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from siptls.config import format_address
from siptls.contexts import SIPTLSTransport, describe_verify_errors
from siptls.errors import ProtocolError, SendError
from siptls.framing import (
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_MAX_HEADER_SIZE,
    FramingError,
    Message,
    NeedData,
    Ping,
    SIPFramer,
)
from siptls.interfaces import ISIPApplication, ISIPConnection
from siptls.message import (
    Request,
    SIPMessage,
    build_response,
    parse_head_leniently,
    parse_message,
)
from siptls.registry import ConnectionRecord, ConnectionRegistry, QueueAccount
from siptls.tlsinfo import TLSInfo

__all__ = ["ConnectionLimits", "ConnectionSweeper", "SIPTLSFactory", "SIPTLSProtocol"]

log = Logger(namespace="siptls.connection")

_PONG = b"\r\n"

REFUSAL_LOG_INTERVAL = 10.0
"""Seconds between two log lines about connections refused at tls_max_connections."""


class LogBudget:
    """At most ``burst`` log lines per ``interval`` seconds; then one summary line.

    Failed handshakes are worth a line each, until a scanner or a flood
    makes them thousands a second: then the lines stop, and when the
    interval ends one line says how many were left out (all of them are
    still counted by reason in ``tls.info``).
    """

    __slots__ = ("what", "burst", "interval", "_window_start", "_used", "_suppressed")

    def __init__(
        self, what: str = "failed TLS handshakes", burst: int = 20, interval: float = 10.0
    ) -> None:
        self.what = what
        self.burst = burst
        self.interval = interval
        self._window_start = float("-inf")
        self._used = 0
        self._suppressed = 0

    def allow(self, now: float) -> bool:
        if now - self._window_start >= self.interval:
            if self._suppressed:
                log.warn(
                    "{count} more {what} in {interval:g} s were not logged one by one.",
                    count=self._suppressed,
                    what=self.what,
                    interval=self.interval,
                )
            self._window_start = now
            self._used = 0
            self._suppressed = 0
        if self._used < self.burst:
            self._used += 1
            return True
        self._suppressed += 1
        return False


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Per-connection limits and timeouts; the defaults suit a SIP proxy."""

    max_header_size: int = DEFAULT_MAX_HEADER_SIZE
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    con_ct_wq_max: int = 65536
    ct_wq_max: int = 10 * 1024 * 1024
    max_send_buffer: int = 1024 * 1024
    handshake_timeout: float = 10.0
    connection_timeout: float = 600.0
    send_close_notify: bool = False
    log_connections: bool = True


@implementer(IHandshakeListener, ISIPConnection, IPushProducer)
class SIPTLSProtocol(Protocol):
    """One SIP-over-TLS connection."""

    direction = "in"
    tls: TLSInfo | None = None
    # Twisted's TLS transport (siptls.contexts.SIPTLSTransport), which has
    # more than ITransport says (producers, abortConnection, getHandle).
    transport: Any

    def __init__(self, factory: SIPTLSFactory, direction: str = "in") -> None:
        self.factory = factory
        self.direction = direction
        self.framer = SIPFramer(factory.limits.max_header_size, factory.limits.max_body_size)
        self.record: ConnectionRecord | None = None
        self._batch: list[bytes] | None = None
        self._queue: list[bytes] | None = []
        self._paused_output = 0
        self._paused = False
        self._closing_reason: str | None = None
        self._close_after_batch = False
        self._producing = False

    # -- ISIPConnection ---------------------------------------------------

    @property
    def id(self) -> int:
        return self.record.id if self.record is not None else 0

    @property
    def local(self) -> tuple[str, int]:
        return self.record.local if self.record is not None else ("", 0)

    @property
    def remote(self) -> tuple[str, int]:
        return self.record.remote if self.record is not None else ("", 0)

    def send(self, message: bytes | SIPMessage) -> None:
        data = message.to_bytes() if isinstance(message, SIPMessage) else message
        if self._batch is not None:
            self._batch.append(data)
        elif self._queue is not None:
            self._enqueue(data)
        else:
            self._write(data)

    def reply(
        self,
        request: SIPMessage,
        status: int,
        reason: str | None = None,
        headers: Iterable[tuple[bytes, bytes]] | bytes = (),
    ) -> None:
        data = build_response(request, status, reason, headers, source=self.remote)
        batch = self._batch
        if batch is not None:
            batch.append(data)
        else:
            self.send(data)

    def close(self) -> None:
        self.loseConnection("closed locally")

    def loseConnection(self, reason: str | None = None) -> None:
        """Close gracefully after pending output (the registry's kill uses this)."""
        transport = self.transport
        if transport is None:
            return
        self._closing_reason = self._closing_reason or reason or "closed locally"
        if self.record is not None:
            self.record.state = "closing"
        if not self.factory.limits.send_close_notify and self.tls is not None:
            self._close_without_notify(transport)
            return
        # Twisted's TLS transport waits for a registered producer to go
        # away before it starts the TLS shutdown.
        if self._producing:
            self._producing = False
            transport.unregisterProducer()
        transport.loseConnection()

    def _close_without_notify(self, transport: Any) -> None:
        """Flush pending output, then close TCP without a TLS close_notify.

        Kamailio's default (``send_close_notify=0``).  Twisted's TLS
        transport has no switch for it, so: with our producer registered,
        ``loseConnection()`` encrypts and writes the pending output but
        postpones the TLS shutdown; marking the shutdown as already sent
        and received then makes OpenSSL's ``SSL_shutdown`` finish at once
        without an alert, and unregistering the producer lets Twisted run
        it and close TCP once the written data has drained.
        """
        if not self._producing:
            self._producing = True
            transport.registerProducer(self, True)
        transport.loseConnection()
        handle = transport.getHandle()
        if handle is not None:
            handle.set_shutdown(SSL.SENT_SHUTDOWN | SSL.RECEIVED_SHUTDOWN)
        self._producing = False
        transport.unregisterProducer()

    def abortConnection(self, reason: str | None = None) -> None:
        """Close at once, dropping pending output."""
        transport = self.transport
        if transport is None:
            return
        self._closing_reason = self._closing_reason or reason or "aborted locally"
        if self.record is not None:
            self.record.state = "closing"
        if self._producing:
            self._producing = False
            transport.unregisterProducer()
        transport.abortConnection()

    # -- Twisted protocol -------------------------------------------------

    def connectionMade(self) -> None:
        factory = self.factory
        transport = self.transport
        registry = factory.registry
        peer = transport.getPeer()
        host = transport.getHost()
        remote = (getattr(peer, "host", str(peer)), getattr(peer, "port", 0))
        local = (getattr(host, "host", str(host)), getattr(host, "port", 0))
        if self.direction == "in" and registry.at_capacity():
            registry.refused()
            # A flood of connections must not become a flood of log lines:
            # one line per REFUSAL_LOG_INTERVAL, with the running count.
            now = factory.clock.seconds()
            if now - factory.refusal_logged_at >= REFUSAL_LOG_INTERVAL:
                factory.refusal_logged_at = now
                log.warn(
                    "Refused a TLS connection from {peer}: {count} connections is the maximum "
                    "(tls_max_connections); {refused} refused since start.",
                    peer=format_address(remote),
                    count=registry.max_connections,
                    refused=registry.refused_total,
                )
            self._closing_reason = "refused: too many connections"
            transport.abortConnection()
            return
        generation = getattr(transport, "generation", None)
        number = generation.number if generation is not None else 0
        lower = getattr(transport, "lowerTransport", None)
        if lower is not None and hasattr(lower, "setTcpNoDelay"):
            # SIP messages are small and answered at once: Nagle plus delayed
            # ACKs would add tens of milliseconds to every exchange.
            lower.setTcpNoDelay(True)
        self.record = registry.open(self.direction, local, remote, self, number)
        transport.registerProducer(self, True)
        self._producing = True

    def handshakeCompleted(self) -> None:
        record = self.record
        transport = self.transport
        if record is None or transport is None:
            return
        domain = getattr(transport, "domain", None)
        handle = transport.getHandle()
        self.tls = info = TLSInfo.from_connection(
            handle,
            domain=domain.name if domain is not None else None,
            domain_reason=getattr(transport, "domain_reason", None),
            local=domain.certificate if domain is not None else None,
            verify_errors=getattr(transport, "verify_errors", None),
            peer_possible=self.direction == "out"
            or domain is None
            or domain.verify_mode != SSL.VERIFY_NONE,
        )
        record.tls_version = info.version
        record.cipher = info.cipher
        record.cipher_bits = info.cipher_bits
        record.sni = info.server_name
        record.domain = info.domain
        record.domain_reason = info.domain_reason
        record.verification = info.verification
        if info.peer is not None:
            record.peer_subject = info.peer.subject
            record.peer_issuer = info.peer.issuer
            record.peer_serial = info.peer.serial
            record.peer_not_after = info.peer.not_after.isoformat()
        self.factory.registry.handshake_done(record)
        if self.factory.limits.log_connections:
            self._log_established(record, info)
        queued, self._queue = self._queue, None
        if queued:
            self._release_queue(queued)
            self._write(b"".join(queued))
        self.factory.application.connectionOpened(self)

    def _log_established(self, record: ConnectionRecord, info: TLSInfo) -> None:
        log.info(
            "TLS connection {connection_id} {direction} {peer} established: {version} {cipher}, "
            "domain {domain} ({reason}), server name {sni}, peer certificate: {verification}.",
            connection_id=record.id,
            direction="from" if self.direction == "in" else "to",
            peer=format_address(record.remote),
            version=info.version,
            cipher=info.cipher,
            domain=info.domain,
            reason=info.domain_reason,
            sni=info.server_name,
            verification=info.verification,
        )

    def dataReceived(self, data: bytes) -> None:
        record = self.record
        if record is None:
            return
        record.bytes_in += len(data)
        record.last_activity = self.factory.clock.seconds()
        framer = self.framer
        framer.receive_data(data)
        batch = self._batch = []
        pongs = 0
        application = self.factory.application
        try:
            while True:
                event = framer.next_event()
                if type(event) is Message:
                    record.messages_in += 1
                    try:
                        message = parse_message(event)
                    except ProtocolError as problem:
                        self._bad_message(event.head, problem)
                        continue
                    if type(message) is Request:
                        application.requestReceived(message, self)
                    else:
                        application.responseReceived(message, self)
                elif isinstance(event, NeedData):
                    break
                elif isinstance(event, Ping):
                    batch.append(_PONG)
                    pongs += 1
                elif isinstance(event, FramingError):
                    self._framing_failed(event)
                    break
                # A pong needs no answer.
        finally:
            self._batch = None
            if batch:
                record.messages_out += len(batch) - pongs
                self._write(b"".join(batch) if len(batch) > 1 else batch[0])
            if self._close_after_batch:
                self.loseConnection()

    def connectionLost(self, reason: Failure = netError.ConnectionDone) -> None:  # type: ignore[assignment]
        record = self.record
        if self._queue:
            self._release_queue(self._queue)
        self._queue = None
        if record is None:
            return
        why = self._closing_reason or _describe_loss(
            reason, getattr(self.transport, "verify_errors", None)
        )
        registry = self.factory.registry
        established = self.tls is not None
        if not established:
            registry.handshake_failed(record, why)
            if self.factory.failure_log.allow(self.factory.clock.seconds()):
                log.info(
                    "TLS handshake with {peer} failed: {reason}.",
                    peer=format_address(record.remote),
                    reason=why,
                    connection_id=record.id,
                )
        elif self.factory.limits.log_connections:
            log.info(
                "TLS connection {connection_id} with {peer} closed: {reason}; "
                "{messages_in} messages in, {messages_out} out.",
                connection_id=record.id,
                peer=format_address(record.remote),
                reason=why,
                messages_in=record.messages_in,
                messages_out=record.messages_out,
            )
        registry.close(record)
        if established:
            self.factory.application.connectionClosed(self, why)

    # -- IPushProducer: the TCP buffer filled or drained -------------------

    def pauseProducing(self) -> None:
        if not self._paused:
            self._paused = True
            self._paused_output = 0
            lower = getattr(self.transport, "lowerTransport", None)
            if lower is not None:
                lower.pauseProducing()

    def resumeProducing(self) -> None:
        if self._paused:
            self._paused = False
            self._paused_output = 0
            lower = getattr(self.transport, "lowerTransport", None)
            if lower is not None:
                lower.resumeProducing()

    def stopProducing(self) -> None:
        pass

    # -- internals ---------------------------------------------------------

    def _write(self, data: bytes) -> None:
        record = self.record
        if record is None or self.transport is None:
            return
        record.bytes_out += len(data)
        if self._paused:
            self._paused_output += len(data)
            if self._paused_output > self.factory.limits.max_send_buffer:
                self.abortConnection(
                    f"the peer does not read: over {self.factory.limits.max_send_buffer} "
                    "bytes of output are waiting"
                )
                return
        self.transport.write(data)

    def _enqueue(self, data: bytes) -> None:
        limits = self.factory.limits
        account = self.factory.queue_account
        record = self.record
        queued = record.queued_cleartext if record is not None else 0
        if queued + len(data) > limits.con_ct_wq_max:
            self.abortConnection("clear-text queue full (con_ct_wq_max)")
            raise SendError(
                f"the clear-text queue of connection {self.id} is full: {queued} bytes queued, "
                f"con_ct_wq_max is {limits.con_ct_wq_max}."
            )
        if account.queued + len(data) > limits.ct_wq_max:
            self.abortConnection("clear-text queues full (ct_wq_max)")
            raise SendError(
                f"the clear-text queues of all connections hold {account.queued} bytes; "
                f"ct_wq_max is {limits.ct_wq_max}."
            )
        assert self._queue is not None
        self._queue.append(data)
        account.queued += len(data)
        if record is not None:
            record.queued_cleartext += len(data)

    def _release_queue(self, queued: list[bytes]) -> None:
        size = sum(len(chunk) for chunk in queued)
        self.factory.queue_account.queued -= size
        if self.record is not None:
            self.record.queued_cleartext = 0

    def _bad_message(self, head: bytes, problem: ProtocolError) -> None:
        if self.factory.protocol_error_log.allow(self.factory.clock.seconds()):
            self._log_bad_message(problem)
        request = parse_head_leniently(head)
        if request is not None and not head.startswith(b"ACK "):
            self.send(build_response(request, problem.status_hint, source=self.remote))

    def _log_bad_message(self, problem: ProtocolError) -> None:
        log.info(
            "Bad SIP message on connection {connection_id} from {peer}: {reason}",
            connection_id=self.id,
            peer=format_address(self.remote),
            reason=problem.reason,
        )

    def _framing_failed(self, problem: FramingError) -> None:
        if self.factory.protocol_error_log.allow(self.factory.clock.seconds()):
            log.warn(
                "Closing connection {connection_id} from {peer}: {reason}",
                connection_id=self.id,
                peer=format_address(self.remote),
                reason=problem.reason,
            )
        if problem.head is not None:
            request = parse_head_leniently(problem.head)
            if request is not None:
                self.send(build_response(request, problem.status_hint, source=self.remote))
        self._closing_reason = f"framing error: {problem.reason}"
        self._close_after_batch = True


class SIPTLSFactory(Factory):
    """Builds :class:`SIPTLSProtocol` instances sharing one application."""

    def __init__(
        self,
        application: ISIPApplication,
        registry: ConnectionRegistry,
        clock: IReactorTime,
        limits: ConnectionLimits | None = None,
        direction: str = "in",
    ) -> None:
        self.application = application
        self.registry = registry
        self.clock = clock
        self.limits = limits or ConnectionLimits()
        self.direction = direction
        # The registry's account, shared with every other factory using it.
        self.refusal_logged_at = float("-inf")
        self.failure_log = LogBudget("failed TLS handshakes (tls.info counts them by reason)")
        self.protocol_error_log = LogBudget("bad SIP messages and framing errors")
        self.queue_account: QueueAccount = registry.queue_account

    def buildProtocol(self, addr: Any) -> SIPTLSProtocol:
        return SIPTLSProtocol(self, self.direction)


class ConnectionSweeper:
    """Closes connections whose handshake or idle time ran out.

    One periodic look over the registry costs far less than a timer per
    connection, and the timeouts are coarse anyway (seconds).
    """

    def __init__(
        self,
        registry: ConnectionRegistry,
        limits: ConnectionLimits,
        clock: IReactorTime,
        interval: float = 1.0,
    ) -> None:
        self.registry = registry
        self.limits = limits
        self.clock = clock
        self._loop = LoopingCall(self.sweep)
        self._loop.clock = clock
        self.interval = interval

    def start(self) -> None:
        self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def sweep(self) -> None:
        """Close every connection past its handshake or idle timeout."""
        now = self.clock.seconds()
        handshake_deadline = now - self.limits.handshake_timeout
        idle_timeout = self.limits.connection_timeout
        idle_deadline = now - idle_timeout if idle_timeout > 0 else None
        for record in self.registry:
            if record.state == "handshaking":
                if record.created <= handshake_deadline:
                    self._expire(
                        record, f"no TLS handshake within {self.limits.handshake_timeout:g} s"
                    )
            elif idle_deadline is not None and record.last_activity <= idle_deadline:
                self._expire(record, f"idle for {idle_timeout:g} s (connection_timeout)")

    def _expire(self, record: ConnectionRecord, reason: str) -> None:
        connection = record._transport
        if isinstance(connection, SIPTLSProtocol):
            connection.abortConnection(reason)


def _describe_loss(reason: Failure, verify_errors: list[tuple[int, int]] | None = None) -> str:
    """Why a connection ended, in words for the log and the registry.

    OpenSSL reports every refused certificate as "certificate verify
    failed"; the errors the verify callback recorded (``verify_errors``)
    name the real reason: expired, unknown CA, revoked, chain too long...
    """
    value = reason.value if isinstance(reason, Failure) else reason
    if isinstance(value, SSL.Error):
        details = []
        for entry in value.args[0] if value.args and isinstance(value.args[0], list) else []:
            if isinstance(entry, tuple) and entry:
                details.append(str(entry[-1]))
        if verify_errors and "certificate verify failed" in details:
            return "certificate verification failed: " + describe_verify_errors(verify_errors)
        if "peer did not return a certificate" in details:
            return "no certificate: the peer did not present one and this domain requires it"
        return "TLS error: " + (", ".join(details) or str(value))
    if isinstance(value, netError.ConnectionDone):
        return "closed cleanly"
    if isinstance(value, netError.ConnectionLost):
        return "connection lost"
    return str(value) or type(value).__name__


__all__ += ["SIPTLSTransport"]
