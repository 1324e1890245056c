"""What a connection negotiated: the equivalents of Kamailio's ``$tls_*``.

Built once, when the handshake completes, from the OpenSSL connection; the
certificate details behind it are computed only when asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from OpenSSL import SSL

from siptls.certinfo import CertificateFacts
from siptls.contexts import describe_verify_errors

__all__ = ["TLSInfo"]

# OpenSSL X509_V_ERR_* numbers behind the per-verdict flags.
_EXPIRED = frozenset({10})  # CERT_HAS_EXPIRED
_NOT_YET_VALID = frozenset({9})
_REVOKED = frozenset({23})
_SELF_SIGNED = frozenset({18, 19})  # DEPTH_ZERO_SELF_SIGNED_CERT, SELF_SIGNED_CERT_IN_CHAIN


_SHARED: dict[str, str] = {}


def _shared(value: str | None) -> str | None:
    if value is None:
        return None
    shared = _SHARED.get(value)
    if shared is None:
        shared = value
        if len(_SHARED) < 256:
            _SHARED[value] = value
    return shared


@dataclass(frozen=True, slots=True)
class TLSInfo:
    """Negotiated TLS facts of one connection."""

    version: str
    cipher: str | None
    cipher_bits: int | None
    server_name: str | None
    domain: str | None
    domain_reason: str | None
    peer: CertificateFacts | None
    local: CertificateFacts | None
    verify_errors: tuple[tuple[int, int], ...] = ()

    @classmethod
    def from_connection(
        cls,
        connection: SSL.Connection,
        *,
        domain: str | None,
        domain_reason: str | None,
        local: CertificateFacts | None,
        verify_errors: Sequence[tuple[int, int]] | None,
        peer_possible: bool = True,
    ) -> TLSInfo:
        raw_name = connection.get_servername()
        # A server that asked for no certificate got none: skip the lookup.
        peer_cert = connection.get_peer_certificate(as_cryptography=True) if peer_possible else None
        return cls(
            # A handful of distinct values, kept once rather than per connection.
            version=_shared(connection.get_protocol_version_name()) or "unknown",
            cipher=_shared(connection.get_cipher_name()),
            cipher_bits=connection.get_cipher_bits(),
            server_name=raw_name.decode("ascii", "replace") if raw_name else None,
            domain=domain,
            domain_reason=domain_reason,
            peer=CertificateFacts(peer_cert) if isinstance(peer_cert, x509.Certificate) else None,
            local=local,
            verify_errors=tuple(verify_errors or ()),
        )

    def is_peer_verified(self) -> bool:
        """True when the peer presented a certificate and its chain verified."""
        return self.peer is not None and not self.verify_errors

    @property
    def verification(self) -> str:
        """``ok``, ``none`` (no peer certificate) or the failure reasons."""
        if self.peer is None:
            return "none"
        if not self.verify_errors:
            return "ok"
        return describe_verify_errors(self.verify_errors)

    def _has(self, errors: frozenset[int]) -> bool:
        return any(errno in errors for _, errno in self.verify_errors)

    @property
    def peer_expired(self) -> bool:
        return self._has(_EXPIRED)

    @property
    def peer_not_yet_valid(self) -> bool:
        return self._has(_NOT_YET_VALID)

    @property
    def peer_revoked(self) -> bool:
        return self._has(_REVOKED)

    @property
    def peer_self_signed(self) -> bool:
        return self._has(_SELF_SIGNED) or (self.peer is not None and self.peer.self_signed)
