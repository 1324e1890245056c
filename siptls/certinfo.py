"""Facts about a certificate, as an application or operator wants them.

The equivalents of Kamailio's ``$tls_peer_*`` / ``$tls_my_*`` variables:
subject and issuer (whole, and by component), serial, validity, SANs by
type, self-signed.  Pure: works on ``cryptography.x509`` objects only.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from functools import cached_property

from cryptography import x509
from cryptography.x509.oid import NameOID

__all__ = ["CertificateFacts"]

_COMPONENTS = {
    "CN": NameOID.COMMON_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "UID": NameOID.USER_ID,
    "EMAIL": NameOID.EMAIL_ADDRESS,
}


@dataclass(frozen=True)
class CertificateFacts:
    """Read-only facts about one certificate, computed on first use."""

    certificate: x509.Certificate

    @cached_property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()

    @cached_property
    def issuer(self) -> str:
        return self.certificate.issuer.rfc4514_string()

    def subject_component(self, name: str) -> list[str]:
        """Values of one subject component: ``CN``, ``O``, ``OU``, ``C``, ``ST``, ``L``..."""
        return _component(self.certificate.subject, name)

    def issuer_component(self, name: str) -> list[str]:
        return _component(self.certificate.issuer, name)

    @cached_property
    def serial(self) -> str:
        return format(self.certificate.serial_number, "X")

    @cached_property
    def not_before(self) -> datetime.datetime:
        return self.certificate.not_valid_before_utc

    @cached_property
    def not_after(self) -> datetime.datetime:
        return self.certificate.not_valid_after_utc

    @cached_property
    def sans(self) -> dict[str, list[str]]:
        """Subject alternative names by type: ``dns``, ``uri``, ``email``, ``ip``."""
        result: dict[str, list[str]] = {"dns": [], "uri": [], "email": [], "ip": []}
        try:
            extension = self.certificate.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            )
        except (x509.ExtensionNotFound, ValueError):
            return result
        san = extension.value
        result["dns"] = [str(v) for v in san.get_values_for_type(x509.DNSName)]
        result["uri"] = [str(v) for v in san.get_values_for_type(x509.UniformResourceIdentifier)]
        result["email"] = [str(v) for v in san.get_values_for_type(x509.RFC822Name)]
        result["ip"] = [str(v) for v in san.get_values_for_type(x509.IPAddress)]
        return result

    @cached_property
    def self_signed(self) -> bool:
        return self.certificate.subject == self.certificate.issuer

    def expired(self, now: datetime.datetime | None = None) -> bool:
        moment = now or datetime.datetime.now(datetime.UTC)
        return moment > self.not_after

    def not_yet_valid(self, now: datetime.datetime | None = None) -> bool:
        moment = now or datetime.datetime.now(datetime.UTC)
        return moment < self.not_before


def _component(name: x509.Name, component: str) -> list[str]:
    oid = _COMPONENTS.get(component.upper())
    if oid is None:
        raise KeyError(f"unknown name component {component!r}; known: {', '.join(_COMPONENTS)}")
    return [str(attribute.value) for attribute in name.get_attributes_for_oid(oid)]
