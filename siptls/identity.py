"""RFC 5922 peer identity matching for SIP over TLS.

Pure: works on :class:`cryptography.x509.Certificate` objects and imports
neither ``twisted`` nor ``OpenSSL``.

Theory of operation.  :func:`presented_identities` reads everything a
certificate says about who it is into a frozen :class:`PresentedIdentities`
(SIP URI domain identities, DNS names, IP addresses, and Common Names when
there is no subjectAltName extension), already normalised with
:func:`siptls.hostnames.normalise_domain`.  :func:`match_presented` compares
that record with the SIP domain (or IP address) we meant to reach and gives an
:class:`IdentityVerdict`.  :func:`match_identity` does both steps and may raise
:class:`~siptls.errors.IdentityError`; :func:`verify_identity` does the same
but never raises, turning every failure into a rejecting verdict.  Call
:func:`verify_identity` from TLS verify callbacks: Twisted's own
``optionsForClientTLS`` lets the handshake through when its identity check
raises anything unexpected, and siptls must fail closed instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.x509.oid import NameOID

from siptls.errors import IdentityError
from siptls.hostnames import IPAddress, normalise_domain, parse_ip

__all__ = [
    "Identity",
    "IdentityType",
    "IdentityVerdict",
    "PresentedIdentities",
    "match_identity",
    "match_presented",
    "presented_identities",
    "verify_identity",
]

IdentityType = Literal["uri", "dns", "cn", "ip"]

_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True, slots=True)
class Identity:
    """One identity a certificate presents.

    ``name`` is the normal form used for comparison (a lower-case A-label
    domain, ``*.`` + domain for a wildcard DNS name, or the compressed text of
    an IP address); ``presented`` is the value as written in the certificate.
    """

    type: IdentityType
    name: str
    presented: str

    def describe(self) -> str:
        """Return the identity the way an operator sees it in ``openssl x509 -text``."""
        if self.type == "uri":
            return self.presented
        if self.type == "dns":
            return f"DNS:{self.presented}"
        if self.type == "ip":
            return f"IP:{self.presented}"
        return f"CN={self.presented}"


@dataclass(frozen=True, slots=True)
class PresentedIdentities:
    """Every identity a certificate presents, in certificate order.

    ``uri`` holds only SIP/SIPS URIs without a user part (RFC 5922 §7.1 domain
    identities), reduced to their host.  ``cn`` is filled only when the
    certificate has no subjectAltName extension at all (``has_san`` false).
    ``skipped`` has one sentence per value that was read but cannot serve as an
    identity (a URI with a user part, another scheme, an e-mail address, a
    name that is not a valid host name), for error messages and logs.
    """

    uri: tuple[Identity, ...]
    dns: tuple[Identity, ...]
    ip: tuple[Identity, ...]
    cn: tuple[Identity, ...]
    has_san: bool
    skipped: tuple[str, ...]

    def all(self) -> tuple[Identity, ...]:
        """Return every usable identity: URIs, then DNS names, IPs, CNs."""
        return self.uri + self.dns + self.ip + self.cn


@dataclass(frozen=True, slots=True)
class IdentityVerdict:
    """The outcome of comparing a certificate with a reference identity.

    ``matched`` says whether the peer is who we meant to reach; ``identity``
    is the certificate identity that matched (``None`` when nothing did);
    ``reason`` is a full sentence either way, fit for logs and for the error
    a failed connection reports.  A verdict is truthy only when it matched,
    so ``if verdict:`` cannot accidentally accept.
    """

    matched: bool
    reference: str
    identity: Identity | None
    reason: str

    @property
    def identity_type(self) -> IdentityType | None:
        """The type of the identity that matched, or ``None``."""
        return None if self.identity is None else self.identity.type

    def __bool__(self) -> bool:
        return self.matched


def _sip_uri_host(value: str) -> tuple[str | None, str]:
    """Return ``(host, "")`` for a SIP domain URI, or ``(None, why_not)``.

    RFC 3261 URI shape: ``sip:[userinfo@]host[:port][;params][?headers]``.
    Neither params nor headers may contain ``@``, so any ``@`` means a user
    part, and per RFC 5922 §7.1 such a URI names a user, not a domain.
    """
    scheme, colon, rest = value.partition(":")
    if not colon or scheme.lower() not in ("sip", "sips"):
        return None, "is not a SIP URI"
    if "@" in rest:
        return None, "has a user part, so it names a user rather than a SIP domain (RFC 5922 §7.1)"
    hostport = re.split(r"[;?]", rest, maxsplit=1)[0]
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            return None, "has an unclosed '[' in its host"
        host, after = hostport[1:close], hostport[close + 1 :]
        if after and not (after.startswith(":") and _PORT.fullmatch(after[1:])):
            return None, "has text after its IPv6 host that is not a port"
        address = parse_ip(host)
        if address is None or address.version != 6:
            return None, "has a bracketed host that is not an IPv6 address"
        return str(address), ""
    host, colon, port = hostport.partition(":")
    if colon and not _PORT.fullmatch(port):
        return None, "has a port that is not a number"
    address = parse_ip(host)
    if address is not None:
        return str(address), ""
    try:
        return normalise_domain(host), ""
    except ValueError as exc:
        return None, f"has a host that is not a valid domain name ({exc})"


def _dns_name(value: str) -> str:
    """Normalise a DNS SAN, keeping a whole left-most ``*`` label as a wildcard."""
    if value.startswith("*."):
        return "*." + normalise_domain(value[2:])
    if "*" in value:
        raise ValueError(f"{value!r} has a wildcard that is not a whole left-most label.")
    return normalise_domain(value)


def presented_identities(cert: x509.Certificate) -> PresentedIdentities:
    """Read the identities ``cert`` presents.

    Raises :class:`~siptls.errors.IdentityError` when the certificate's
    extensions or subject cannot be parsed.  A single unusable value is not an
    error: it is left out and described in ``skipped``, which can only make a
    match less likely.
    """
    uri: list[Identity] = []
    dns: list[Identity] = []
    ip: list[Identity] = []
    cn: list[Identity] = []
    skipped: list[str] = []
    try:
        san: x509.SubjectAlternativeName | None = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except x509.ExtensionNotFound:
        san = None
    except Exception as exc:
        raise IdentityError(f"The certificate's extensions cannot be parsed: {exc}") from exc

    if san is not None:
        for general_name in san:
            if isinstance(general_name, x509.UniformResourceIdentifier):
                value = general_name.value
                host, why_not = _sip_uri_host(value)
                if host is None:
                    skipped.append(f"URI:{value} {why_not}.")
                else:
                    uri.append(Identity("uri", host, value))
            elif isinstance(general_name, x509.DNSName):
                value = general_name.value
                try:
                    dns.append(Identity("dns", _dns_name(value), value))
                except ValueError as exc:
                    skipped.append(f"DNS:{value} is not usable: {exc}")
            elif isinstance(general_name, x509.IPAddress):
                address = general_name.value
                if isinstance(address, IPAddress):
                    ip.append(Identity("ip", str(address), str(address)))
                else:
                    skipped.append(f"IP:{address} is a network, not an address.")
            elif isinstance(general_name, x509.RFC822Name):
                skipped.append(f"email:{general_name.value} is not a SIP domain identity.")
            else:
                skipped.append(f"{general_name!r} is not a SIP domain identity.")
    else:
        try:
            attributes = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        except Exception as exc:
            raise IdentityError(f"The certificate's subject cannot be parsed: {exc}") from exc
        for attribute in attributes:
            cn_value = attribute.value
            if not isinstance(cn_value, str):
                skipped.append(f"CN={cn_value!r} is not text.")
                continue
            try:
                cn.append(Identity("cn", normalise_domain(cn_value), cn_value))
            except ValueError as exc:
                skipped.append(f"CN={cn_value} is not usable: {exc}")

    return PresentedIdentities(
        uri=tuple(uri),
        dns=tuple(dns),
        ip=tuple(ip),
        cn=tuple(cn),
        has_san=san is not None,
        skipped=tuple(skipped),
    )


def _wildcard_matches(pattern: str, reference: str) -> bool:
    """Whether ``*.base`` covers ``reference``: exactly one extra, non-empty label.

    ``*.example.com`` matches ``a.example.com`` but neither ``example.com``
    (the apex) nor ``a.b.example.com`` (two labels); a wildcard directly under
    a top-level name (``*.com``) matches nothing.
    """
    base = pattern[2:]
    if "." not in base:
        return False
    head, dot, tail = reference.partition(".")
    return bool(dot) and bool(head) and tail == base


def _listing(presented: PresentedIdentities) -> str:
    return ", ".join(identity.describe() for identity in presented.all())


def _rejection(
    presented: PresentedIdentities,
    reference: str,
    what: str,
    note: str = "",
) -> IdentityVerdict:
    listing = _listing(presented)
    if listing:
        reason = f"certificate for {listing} does not match the {what} {reference!r}."
    else:
        reason = (
            f"certificate presents no usable identity (no SIP URI, DNS or IP subjectAltName, "
            f"and no host name in a Common Name), so it cannot match the {what} {reference!r}."
        )
    if note:
        reason += " " + note
    if presented.skipped:
        reason += " Ignored: " + " ".join(presented.skipped)
    return IdentityVerdict(matched=False, reference=reference, identity=None, reason=reason)


def _acceptance(identity: Identity, reference: str, what: str) -> IdentityVerdict:
    return IdentityVerdict(
        matched=True,
        reference=reference,
        identity=identity,
        reason=f"certificate identity {identity.describe()} matches the {what} {reference!r}.",
    )


def match_presented(
    presented: PresentedIdentities,
    reference: str,
    *,
    allow_wildcards: bool = False,
    uri_exclusive: bool = False,
) -> IdentityVerdict:
    """Compare already-read identities with ``reference``; see :func:`match_identity`.

    Raises :class:`~siptls.errors.IdentityError` when ``reference`` is neither
    a host name nor an IP address.
    """
    if not isinstance(reference, str):
        raise IdentityError(f"The reference identity {reference!r} is not text.")

    address = parse_ip(reference)
    if address is not None:
        # An IP literal is only ever vouched for by an IP address SAN: a DNS
        # name or SIP URI spelling the same digits is not an IP identity.
        for identity in presented.ip:
            if parse_ip(identity.name) == address:
                return _acceptance(identity, reference, "IP address")
        return _rejection(
            presented,
            reference,
            "IP address",
            "Only IP address subjectAltNames are compared with an IP address.",
        )

    try:
        wanted = normalise_domain(reference)
    except ValueError as exc:
        raise IdentityError(
            f"The reference {reference!r} is neither a SIP domain nor an IP address: {exc}",
            reference=reference,
        ) from exc

    # RFC 5922 §7.1, in our words: a "sip" URI subjectAltName without a user
    # part is a SIP domain identity, and a DNS subjectAltName is to be accepted
    # as one only when no identity of that SIP URI kind is found "that
    # matches"; the Common Name may be used only when the certificate has no
    # subjectAltName extension at all.  We read "matches" as "matches the SIP
    # domain being reached": the URI identities are compared first and the DNS
    # names only when none of them matched, so a certificate carrying both
    # ``sip:example.com`` and ``DNS:www.example.com`` is good for either name.
    # The stricter reading ("a certificate with any SIP URI identity is judged
    # on those alone") is available as ``uri_exclusive=True``.
    # sips: URIs are accepted as well as sip: ones (RFC 5922 names only
    # "sip"; a sips URI for a domain asserts at least as much).
    for identity in presented.uri:
        if identity.name == wanted:
            return _acceptance(identity, reference, "SIP domain")
    if presented.uri and uri_exclusive:
        return _rejection(
            presented,
            reference,
            "SIP domain",
            "The certificate has SIP URI identities, so its DNS names were not considered.",
        )
    wildcard_hint = ""
    for identity in presented.dns:
        if identity.name.startswith("*."):
            if _wildcard_matches(identity.name, wanted):
                if allow_wildcards:
                    return _acceptance(identity, reference, "SIP domain")
                wildcard_hint = f"{identity.describe()} would match if wildcards were allowed."
        elif identity.name == wanted:
            return _acceptance(identity, reference, "SIP domain")
    if not presented.has_san:
        for identity in presented.cn:
            if identity.name == wanted:
                return _acceptance(identity, reference, "SIP domain")
    return _rejection(presented, reference, "SIP domain", wildcard_hint)


def match_identity(
    cert: x509.Certificate,
    reference: str,
    *,
    allow_wildcards: bool = False,
    uri_exclusive: bool = False,
) -> IdentityVerdict:
    """Check that ``cert`` belongs to the SIP domain or IP address ``reference``.

    ``reference`` is the SIP domain being reached (the host of the target URI,
    not an SRV target), compared whole and case-insensitively after IDNA
    normalisation, or an IP literal, compared with IP address SANs only.
    SIP URI identities are tried first, then DNS names, then (only for a
    certificate without a subjectAltName extension) Common Names.  Wildcard
    DNS names (``*.example.com``, one left-most label) count only with
    ``allow_wildcards``.

    Raises :class:`~siptls.errors.IdentityError` when the certificate cannot
    be parsed or the reference is not a host name; use :func:`verify_identity`
    where an exception must never escape.
    """
    return match_presented(
        presented_identities(cert),
        reference,
        allow_wildcards=allow_wildcards,
        uri_exclusive=uri_exclusive,
    )


def verify_identity(
    cert: x509.Certificate,
    reference: str,
    *,
    allow_wildcards: bool = False,
    uri_exclusive: bool = False,
) -> IdentityVerdict:
    """Like :func:`match_identity`, but never raises: any failure rejects.

    Whatever goes wrong while reading the certificate or the reference (a
    malformed extension, a bad IDNA label, an unexpected type) becomes a
    verdict with ``matched=False`` whose reason names the problem.
    """
    try:
        return match_identity(
            cert,
            reference,
            allow_wildcards=allow_wildcards,
            uri_exclusive=uri_exclusive,
        )
    except Exception as exc:
        try:
            shown = reference if isinstance(reference, str) else repr(reference)
            reason = (
                f"certificate identity could not be checked against {shown!r}, "
                f"so the peer is rejected: {exc}"
            )
        except Exception:
            shown = "<unprintable>"
            reason = "certificate identity could not be checked, so the peer is rejected."
        return IdentityVerdict(matched=False, reference=shown, identity=None, reason=reason)
