"""OpenSSL contexts for TLS domains, and the connection creators using them.

Theory of operation
-------------------
Each TLS domain becomes one :class:`OpenSSL.SSL.Context`, built completely
when the configuration is loaded and never changed afterwards (pyOpenSSL
refuses to change a context once a connection used it, and a reload builds a
whole new set instead).  A :class:`DomainContext` pairs that context with the
domain's settings and the facts about its own certificate, which are the same
for every connection and so are computed once.

An accepted connection gets its context in two steps.  When the TCP
connection is made, :class:`ServerConnectionCreator` asks the current
:class:`ContextGeneration` for the domain of the local IP:port; then, when the
ClientHello arrives, the SNI callback may switch to a domain chosen by server
name.  OpenSSL's ``SSL_set_SSL_CTX`` only carries the certificate, the trust
store and the TLS 1.2 ciphers over, so the callback re-applies the new domain's
verify mode and options itself, and the verify callback enforces each domain's
depth.

Verification follows Kamailio's table: a domain may not ask for a peer
certificate, ask for one (``optional``), require one (``on``), or ask for one
and accept anything while recording the real verdict (``optional_no_ca``).
The verify callback records every failure (depth, OpenSSL error) on the
connection's :class:`SIPTLSTransport`, so the verdict is known even when the
handshake is allowed to go on.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from siptls.certinfo import CertificateFacts
from siptls.errors import ConfigError

__all__ = [
    "ContextGeneration",
    "ContextSettings",
    "DomainContext",
    "KeyLogWriter",
    "SIPTLSTransport",
    "ServerConnectionCreator",
    "build_context",
    "describe_verify_errors",
    "verify_error_text",
]

log = Logger()

VERSIONS: Final[dict[str, int]] = {
    "TLSv1": SSL.TLS1_VERSION,
    "TLSv1.0": SSL.TLS1_VERSION,
    "TLSv1.1": SSL.TLS1_1_VERSION,
    "TLSv1.2": SSL.TLS1_2_VERSION,
    "TLSv1.3": SSL.TLS1_3_VERSION,
}

_BASE_OPTIONS: Final = (
    SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_NO_SSLv2 | SSL.OP_NO_SSLv3
)
_NO_RENEGOTIATION: Final = getattr(SSL, "OP_NO_RENEGOTIATION", 0)
X509_V_ERR_CERT_CHAIN_TOO_LONG: Final = 22
# Kamailio's cfg range for verify_depth is 0-100.
_OPENSSL_MAX_DEPTH: Final = 100


def verify_error_text(errno: int) -> str:
    """OpenSSL's text for an X.509 verification error number."""
    text = _lib.X509_verify_cert_error_string(errno)
    return _ffi.string(text).decode("ascii", "replace") if text != _ffi.NULL else str(errno)


def describe_verify_errors(errors: Sequence[tuple[int, int]]) -> str:
    """``(depth, errno)`` pairs as text, e.g. ``certificate has expired (depth 0)``.

    Each distinct pair is named once, in the order OpenSSL reported them.
    """
    unique = list(dict.fromkeys(errors))
    return "; ".join(f"{verify_error_text(errno)} (depth {depth})" for depth, errno in unique)


@dataclass(frozen=True, slots=True)
class ContextSettings:
    """Everything needed to build one domain's context; paths are absolute.

    ``origins`` maps a setting name to the ``(file, line)`` it came from, so
    that errors found while loading (a key that does not match its
    certificate, a wrong password) name the right place.
    """

    name: str
    section: str | None = None
    role: str = "server"
    certificate: str | None = None
    private_key: str | None = None
    private_key_password: str | None = field(default=None, repr=False)
    min_version: str | None = "TLSv1.2"
    max_version: str | None = None
    cipher_list: str | None = None
    cipher_list_is_tls13: bool = False
    ca_list: str | None = None
    ca_path: str | None = None
    crl: str | None = None
    verify_peer: bool = False
    require_peer_certificate: bool = False
    accept_unknown_ca: bool = False
    verify_depth: int = 9
    session_cache: bool = False
    session_id: bytes = b"siptls"
    renegotiation: bool = False
    release_buffers: bool = True
    origins: dict[str, tuple[str, int | None]] = field(default_factory=dict, hash=False)

    def where(self, key: str) -> tuple[str | None, int | None]:
        source, line = self.origins.get(key, (None, None))
        return source, line


class KeyLogWriter:
    """Appends NSS key-log lines (for Wireshark) to a file created mode 0600."""

    def __init__(self, path: str) -> None:
        self.path = path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)
        self._file = os.fdopen(fd, "ab", buffering=0)
        self._lock = threading.Lock()

    def __call__(self, connection: SSL.Connection, line: bytes) -> None:
        with self._lock:
            self._file.write(line + b"\n")

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True, slots=True, eq=False)
class DomainContext:
    """A built context with the settings it came from."""

    settings: ContextSettings
    context: SSL.Context
    certificate: CertificateFacts | None
    record: Any = None

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def verify_mode(self) -> int:
        return _verify_mode(self.settings)


def _verify_mode(settings: ContextSettings) -> int:
    if settings.require_peer_certificate:
        return SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT
    if settings.verify_peer or settings.accept_unknown_ca:
        return SSL.VERIFY_PEER
    return SSL.VERIFY_NONE


def _config_error(settings: ContextSettings, key: str, message: str) -> ConfigError:
    source, line = settings.where(key)
    return ConfigError(
        f"{key}: {message}", source=source, line=line, key=key, section=settings.section
    )


def _read(settings: ContextSettings, key: str, path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise _config_error(
            settings, key, f"cannot read {key} '{path}': {error.strerror or error}."
        ) from None


def _load_key(settings: ContextSettings, data: bytes) -> Any:
    password = settings.private_key_password
    path = settings.private_key
    try:
        return serialization.load_pem_private_key(
            data, password.encode("utf-8") if password is not None else None
        )
    except TypeError:
        if password is None:
            raise _config_error(
                settings,
                "private_key",
                f"the private key '{path}' is encrypted and no private_key_password is set.",
            ) from None
        raise _config_error(
            settings,
            "private_key_password",
            f"a private_key_password is set but the key '{path}' is not encrypted.",
        ) from None
    except ValueError:
        if password is not None:
            raise _config_error(
                settings,
                "private_key_password",
                f"the private_key_password does not decrypt '{path}' (or it is not a PEM key).",
            ) from None
        raise _config_error(
            settings, "private_key", f"'{path}' does not hold a PEM private key."
        ) from None


def _load_chain(settings: ContextSettings, data: bytes) -> list[x509.Certificate]:
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        chain = []
    if not chain:
        raise _config_error(
            settings,
            "certificate",
            f"'{settings.certificate}' does not hold a PEM certificate.",
        )
    return chain


def build_context(
    settings: ContextSettings,
    keylog: Callable[[SSL.Connection, bytes], None] | None = None,
    record: Any = None,
) -> DomainContext:
    """Build the complete, never-to-be-changed context of one domain.

    Raises :class:`ConfigError` naming the setting (and its file and line
    when known) for anything that stops the domain from working.
    """
    method = SSL.TLS_SERVER_METHOD if settings.role == "server" else SSL.TLS_CLIENT_METHOD
    context = SSL.Context(method)
    options = _BASE_OPTIONS
    if not settings.renegotiation:
        options |= _NO_RENEGOTIATION
    if not settings.session_cache:
        options |= SSL.OP_NO_TICKET
    context.set_options(options)
    if settings.release_buffers:
        context.set_mode(SSL.MODE_RELEASE_BUFFERS)
    if settings.min_version is not None:
        context.set_min_proto_version(VERSIONS[settings.min_version])
    if settings.max_version is not None:
        context.set_max_proto_version(VERSIONS[settings.max_version])
    if settings.cipher_list:
        try:
            if settings.cipher_list_is_tls13:
                context.set_tls13_ciphersuites(settings.cipher_list.encode("ascii"))
            else:
                context.set_cipher_list(settings.cipher_list.encode("ascii"))
        except (SSL.Error, UnicodeEncodeError):
            raise _config_error(
                settings,
                "cipher_list",
                f"OpenSSL accepts no cipher from cipher_list '{settings.cipher_list}'.",
            ) from None
    if settings.role == "server":
        context.set_session_id(settings.session_id[:32])
        context.set_session_cache_mode(
            SSL.SESS_CACHE_SERVER if settings.session_cache else SSL.SESS_CACHE_OFF
        )
    facts = _load_identity(settings, context)
    _load_trust(settings, context)
    context.set_verify(_verify_mode(settings), _make_verify_callback(settings))
    if settings.role == "server":
        # An SNI switch keeps the first context's depth, and pyOpenSSL has no
        # per-connection SSL_set_verify_depth: so OpenSSL's own limit is set
        # out of the way and each domain's verify callback enforces its
        # domain's depth (re-applied with the callback on a switch).
        context.set_verify_depth(_OPENSSL_MAX_DEPTH)
    else:
        context.set_verify_depth(max(settings.verify_depth, 0))
    if keylog is not None:
        context.set_keylog_callback(keylog)
    return DomainContext(settings, context, facts, record)


def _load_identity(settings: ContextSettings, context: SSL.Context) -> CertificateFacts | None:
    if not settings.certificate:
        if settings.role == "server":
            raise _config_error(settings, "certificate", "a server domain needs a certificate.")
        return None
    chain_pem = _read(settings, "certificate", settings.certificate)
    chain = _load_chain(settings, chain_pem)
    key_path = settings.private_key or settings.certificate
    key = _load_key(settings, _read(settings, "private_key", key_path))
    leaf_public = (
        chain[0]
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    key_public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if leaf_public != key_public:
        raise _config_error(
            settings,
            "private_key",
            f"the private key '{key_path}' does not match the certificate "
            f"'{settings.certificate}'.",
        )
    try:
        context.use_certificate_chain_file(settings.certificate.encode())
        context.use_privatekey(key)
        context.check_privatekey()
    except SSL.Error as error:
        raise _config_error(
            settings, "certificate", f"OpenSSL refused '{settings.certificate}': {error}."
        ) from None
    return CertificateFacts(chain[0])


def _load_trust(settings: ContextSettings, context: SSL.Context) -> None:
    if settings.ca_list or settings.ca_path:
        if settings.ca_list:
            _load_chain_file(settings, "ca_list", settings.ca_list)
        try:
            context.load_verify_locations(
                settings.ca_list.encode() if settings.ca_list else None,
                settings.ca_path.encode() if settings.ca_path else None,
            )
        except SSL.Error as error:
            key = "ca_list" if settings.ca_list else "ca_path"
            raise _config_error(
                settings, key, f"OpenSSL could not load the CAs: {error}."
            ) from None
        if settings.ca_list and settings.role == "server":
            cas = _load_chain_file(settings, "ca_list", settings.ca_list)
            context.set_client_ca_list(
                [crypto.X509.from_cryptography(ca).get_subject() for ca in cas]
            )
    if settings.crl:
        data = _read(settings, "crl", settings.crl)
        try:
            crls = [x509.load_pem_x509_crl(block) for block in _pem_blocks(data, b"X509 CRL")]
        except ValueError:
            crls = []
        if not crls:
            raise _config_error(settings, "crl", f"'{settings.crl}' does not hold a PEM CRL.")
        store = context.get_cert_store()
        assert store is not None
        for crl in crls:
            store.add_crl(crl)
        store.set_flags(crypto.X509StoreFlags.CRL_CHECK | crypto.X509StoreFlags.CRL_CHECK_ALL)


def _load_chain_file(settings: ContextSettings, key: str, path: str) -> list[x509.Certificate]:
    data = _read(settings, key, path)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise _config_error(settings, key, f"'{path}' does not hold a PEM certificate.")
    return certificates


def _pem_blocks(data: bytes, label: bytes) -> list[bytes]:
    begin = b"-----BEGIN " + label + b"-----"
    end = b"-----END " + label + b"-----"
    blocks = []
    start = data.find(begin)
    while start >= 0:
        stop = data.find(end, start)
        if stop < 0:
            break
        blocks.append(data[start : stop + len(end)] + b"\n")
        start = data.find(begin, stop)
    return blocks


def _make_verify_callback(
    settings: ContextSettings,
) -> Callable[[SSL.Connection, crypto.X509, int, int, int], bool]:
    depth_limit = settings.verify_depth
    accept_anything = settings.accept_unknown_ca

    def verify(
        connection: SSL.Connection, _cert: crypto.X509, errno: int, depth: int, ok: int
    ) -> bool:
        # OpenSSL's depth counts intermediates: leaf (0), up to ``depth_limit``
        # intermediates, then the trust anchor.  Server contexts leave the
        # check to this callback, because an SNI switch keeps the first
        # context's depth but takes the new domain's callback.
        if depth > depth_limit + 1:
            ok, errno = 0, X509_V_ERR_CERT_CHAIN_TOO_LONG
        if ok:
            return True
        transport = connection.get_app_data()
        if isinstance(transport, SIPTLSTransport):
            transport.record_verify_error(depth, errno)
        return accept_anything

    return verify


class TLSConnectionFactory(TLSMemoryBIOFactory):
    """Twisted's TLS factory, building :class:`SIPTLSTransport` connections.

    It does not keep Twisted's own dictionary of live connections: the
    connection registry already tracks every one, and an idle server holding
    tens of thousands of connections should not pay for both.
    """

    noisy = False

    def __init__(self, creator: Any, is_client: bool, wrapped: Any, clock: Any = None) -> None:
        super().__init__(creator, is_client, wrapped, clock=clock)
        self.protocol = SIPTLSTransport

    def registerProtocol(self, protocol: Any) -> None:
        pass

    def unregisterProtocol(self, protocol: Any) -> None:
        pass


_RECORD_SIZE: Final = 16384
_READ_SIZE: Final = _RECORD_SIZE + 1024
# One buffer for every connection's reads: the reactor runs in one thread,
# and each read is copied out of it at once.
_READ_BUFFER: Final = _ffi.new("char[]", _READ_SIZE)


class SIPTLSTransport(TLSMemoryBIOProtocol):
    """Twisted's TLS protocol, remembering what siptls needs per connection.

    It keeps the TCP transport before the connection creator runs (Twisted
    sets ``transport`` only afterwards), the domain chosen and why, and the
    verification errors the verify callback saw.

    It derives from the plain ``TLSMemoryBIOProtocol``, not Twisted's
    default ``BufferingTLSTransport``: siptls already writes everything one
    read produced with a single ``write``, and the buffering transport's
    extra timer per write costs more than it saves.
    """

    lowerTransport: Any = None
    transport: Any
    domain: DomainContext | None = None
    domain_reason: str | None = None
    generation: ContextGeneration | None = None
    verify_errors: list[tuple[int, int]] | None = None

    _eof = False

    def makeConnection(self, transport: Any) -> None:
        self.lowerTransport = transport
        if not self._connectWrapped:
            super().makeConnection(transport)
            return
        # What TLSMemoryBIOProtocol.makeConnection does, less its loop of one
        # directlyProvides() per interface of the TCP transport: the
        # ProtocolWrapper.makeConnection call below declares them all at once
        # anyway, and the loop was a tenth of the cost of accepting.
        self._tlsConnection = self.factory._creatorCallable(self)
        self._appSendBuffer = []
        ProtocolWrapper.makeConnection(self, transport)
        self._checkHandshakeStatus()

    # Twisted learns that a memory BIO is empty from a WantReadError, which
    # pyOpenSSL raises at a cost of several microseconds: twice per request
    # and reply.  Asking OpenSSL how many bytes the BIOs hold answers the
    # same question for a fraction of that.  Both fall back to Twisted's own
    # code when pyOpenSSL's connection lacks the attributes used, and while
    # the connection is closing (where Twisted's error handling matters).

    def _flushSendBIO(self) -> None:
        connection = self._tlsConnection
        outgoing = getattr(connection, "_from_ssl", None)
        if outgoing is None:
            super()._flushSendBIO()
            return
        pending = _lib.BIO_get_mem_data(outgoing, _ffi.NULL)
        if pending > 0:
            self.transport.write(connection.bio_read(pending))

    def _flushReceiveBIO(self) -> None:
        connection = self._tlsConnection
        incoming = getattr(connection, "_into_ssl", None)
        if incoming is None or self._eof:
            super()._flushReceiveBIO()
            return
        ssl = connection._ssl
        buffer = _READ_BUFFER
        while not self._lostTLSConnection:
            if _lib.BIO_get_mem_data(incoming, _ffi.NULL) <= 0 and _lib.SSL_pending(ssl) <= 0:
                break
            # SSL_read straight into one reused buffer: pyOpenSSL's recv()
            # allocates 64 KiB and inspects the error state on every call.
            # Anything but data (a partial record, an alert, the peer's
            # close_notify) goes through pyOpenSSL and Twisted as usual.
            count = _lib.SSL_read(ssl, buffer, _READ_SIZE)
            if count <= 0:
                try:
                    data = connection.recv(_READ_SIZE)
                except SSL.WantReadError:
                    break
                except SSL.Error:
                    # Closing, alerts, failed renegotiation: Twisted's handling.
                    super()._flushReceiveBIO()
                    return
            else:
                data = _ffi.buffer(buffer, count)[:]
            if not self._aborted:
                self.wrappedProtocol.dataReceived(data)
        self._flushSendBIO()
        if not self._bios_renewed:
            self._renew_bios()

    _bios_renewed = False

    def _renew_bios(self) -> None:
        """Give the connection fresh, empty memory BIOs once the handshake is over.

        A memory BIO keeps the capacity it grew to, and the handshake (a
        certificate chain one way, key shares and session tickets the other)
        grows both: about 9 KiB per connection that an idle connection would
        hold for its whole life.  When both BIOs are empty, new ones replace
        them (OpenSSL frees the old ones); pyOpenSSL's references are updated
        at once.
        """
        connection = self._tlsConnection
        ssl = getattr(connection, "_ssl", None)
        incoming = getattr(connection, "_into_ssl", None)
        outgoing = getattr(connection, "_from_ssl", None)
        if ssl is None or incoming is None or outgoing is None:
            self._bios_renewed = True  # not the pyOpenSSL this was written for
            return
        if (
            _lib.BIO_get_mem_data(incoming, _ffi.NULL) > 0
            or _lib.BIO_get_mem_data(outgoing, _ffi.NULL) > 0
        ):
            return  # bytes in transit: try again after a later read
        new_incoming = _lib.BIO_new(_lib.BIO_s_mem())
        new_outgoing = _lib.BIO_new(_lib.BIO_s_mem())
        if new_incoming == _ffi.NULL or new_outgoing == _ffi.NULL:
            for bio in (new_incoming, new_outgoing):
                if bio != _ffi.NULL:
                    _lib.BIO_free(bio)
            return
        _lib.SSL_set_bio(ssl, new_incoming, new_outgoing)
        connection._into_ssl = new_incoming
        connection._from_ssl = new_outgoing
        self._bios_renewed = True

    def _write(self, data: bytes) -> None:
        # The usual case, a reply of up to one record on an established
        # connection, goes to SSL_write directly; SSL_write with memory BIOs
        # takes all of it or none, and "none" is retried by Twisted's code,
        # which then meets and handles the reason.
        connection = self._tlsConnection
        ssl = getattr(connection, "_ssl", None)
        if (
            ssl is None
            or self._lostTLSConnection
            or not data
            or len(data) > _RECORD_SIZE
            or _lib.SSL_write(ssl, data, len(data)) != len(data)
        ):
            super()._write(data)
            return
        self._flushSendBIO()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._eof = True
        super().connectionLost(reason)

    def record_verify_error(self, depth: int, errno: int) -> None:
        if self.verify_errors is None:
            self.verify_errors = []
        self.verify_errors.append((depth, errno))


@dataclass(eq=False)
class ContextGeneration:
    """One loaded configuration: every domain's context and how to pick one.

    ``select_socket(host, port)`` gives the initial server domain and the
    reason; ``select_name(initial, sni)`` the domain for a server name, or
    ``None`` to keep the initial one.  ``refuse_unknown_names`` turns an
    unmatched SNI into an ``unrecognized_name`` alert.
    """

    number: int
    select_socket: Callable[[str, int], tuple[DomainContext, str]]
    select_name: Callable[[DomainContext, str], tuple[DomainContext, str] | None]
    domains: Sequence[DomainContext] = ()
    refuse_unknown_names: bool = False
    select_client: Callable[..., tuple[DomainContext, str]] | None = None
    config: Any = None


class UnknownServerName(Exception):
    """Raised inside the SNI callback to send an ``unrecognized_name`` alert."""


@implementer(IOpenSSLServerConnectionCreator)
class ServerConnectionCreator:
    """Creates server connections from the current generation's domains."""

    def __init__(self, generation: ContextGeneration) -> None:
        self.generation = generation
        # Weak, and by object rather than id(): a freed old generation's
        # context id can be reused by a new context, which must be prepared.
        self._prepared: weakref.WeakSet[SSL.Context] = weakref.WeakSet()
        self._prepare(generation)

    def swap(self, generation: ContextGeneration) -> ContextGeneration:
        """Use ``generation`` for new connections; return the previous one."""
        self._prepare(generation)
        previous, self.generation = self.generation, generation
        return previous

    def _prepare(self, generation: ContextGeneration) -> None:
        # The SNI callback has to be on the context a connection starts
        # with; installing it is part of finishing the context, before any
        # connection uses it.
        # A generation no server name can change anything in needs no
        # callback, which saves a Python call in every handshake.
        servers = [d for d in generation.domains if d.settings.role == "server"]
        if not generation.refuse_unknown_names and not any(
            getattr(d.record, "server_name", None) for d in servers
        ):
            return
        for domain in servers:
            if domain.context not in self._prepared:
                domain.context.set_tlsext_servername_callback(self._server_name)
                self._prepared.add(domain.context)

    def serverConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        assert isinstance(tlsProtocol, SIPTLSTransport)
        generation = self.generation
        host = tlsProtocol.lowerTransport.getHost()
        domain, reason = generation.select_socket(host.host, host.port)
        tlsProtocol.domain = domain
        tlsProtocol.domain_reason = reason
        tlsProtocol.generation = generation
        return SSL.Connection(domain.context, None)

    def _server_name(self, connection: SSL.Connection) -> None:
        raw = connection.get_servername()
        if raw is None:
            return
        transport = connection.get_app_data()
        if not isinstance(transport, SIPTLSTransport) or transport.domain is None:
            return
        generation = transport.generation
        assert generation is not None
        name = raw.decode("ascii", "replace")
        choice = generation.select_name(transport.domain, name)
        if choice is None:
            if generation.refuse_unknown_names:
                log.info(
                    "Refused server name {sni!r}: no TLS domain has it (sni_strict).", sni=name
                )
                raise UnknownServerName(name)
            return
        domain, reason = choice
        transport.domain_reason = reason
        if domain is transport.domain:
            return
        transport.domain = domain
        connection.set_context(domain.context)
        # SSL_set_SSL_CTX does not carry these over; apply the new domain's.
        connection.set_verify(domain.verify_mode, _make_verify_callback(domain.settings))
