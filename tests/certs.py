"""Certificates, keys and CRLs built at test run time.

Nothing here touches the network or the disk unless asked (:meth:`Issued.write`).
Keys are EC P-256 by default because they are generated in microseconds; pass
``key_type="rsa"`` where a test needs RSA.

Typical use::

    ca = make_ca()
    leaf = make_leaf(ca, uris=["sip:example.com"], dns=["example.com"])
    leaf.cert                 # cryptography.x509.Certificate
    leaf.cert_pem()           # PEM bytes, leaf only
    leaf.chain_pem()          # leaf followed by any intermediates
    leaf.key_pem(b"secret")   # encrypted PKCS#8 PEM
    crl = make_crl(ca, revoked=[leaf.cert])
    cert_path, key_path = leaf.write(tmpdir, "server")

Every builder takes ``not_before``/``not_after`` so expired and not-yet-valid
certificates are one argument away; :func:`make_expired_leaf` and
:func:`make_future_leaf` are shortcuts.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
KeyType = Literal["ec", "rsa"]

_DAY = datetime.timedelta(days=1)


def now() -> datetime.datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.datetime.now(datetime.UTC)


def make_key(key_type: KeyType = "ec") -> PrivateKey:
    """Generate a private key: EC P-256 (fast, the default) or RSA 2048."""
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey, password: bytes | None = None) -> bytes:
    """Serialise ``key`` as PKCS#8 PEM, encrypted with ``password`` when given."""
    encryption: serialization.KeySerializationEncryption
    if password is None:
        encryption = serialization.NoEncryption()
    else:
        encryption = serialization.BestAvailableEncryption(password)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def cert_pem(*certs: x509.Certificate) -> bytes:
    """Concatenate the PEM forms of ``certs``."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@dataclass(frozen=True)
class Issued:
    """A certificate with its private key and the intermediates above it.

    ``chain`` lists intermediate CA certificates from the one that signed
    ``cert`` upwards, without the root.  CAs built by :func:`make_ca` are
    ``Issued`` too, so any of them can sign further certificates and CRLs.
    """

    cert: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...] = field(default=())

    def cert_pem(self) -> bytes:
        """The certificate alone, as PEM."""
        return cert_pem(self.cert)

    def chain_pem(self) -> bytes:
        """The certificate followed by its intermediates, as PEM."""
        return cert_pem(self.cert, *self.chain)

    def key_pem(self, password: bytes | None = None) -> bytes:
        """The private key as PKCS#8 PEM, encrypted when ``password`` is given."""
        return key_pem(self.key, password)

    def write(
        self,
        directory: str | os.PathLike[str],
        stem: str,
        password: bytes | None = None,
    ) -> tuple[str, str]:
        """Write ``<stem>.pem`` (chain) and ``<stem>.key`` into ``directory``.

        Returns the two paths.  The key file is created mode 0600.
        """
        cert_path = os.path.join(directory, f"{stem}.pem")
        key_path = os.path.join(directory, f"{stem}.key")
        with open(cert_path, "wb") as f:
            f.write(self.chain_pem())
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.key_pem(password))
        return cert_path, key_path


def _name(common_name: str | None, organisation: str = "siptls tests") -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation)]
    if common_name is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _validity(
    not_before: datetime.datetime | None, not_after: datetime.datetime | None
) -> tuple[datetime.datetime, datetime.datetime]:
    start = not_before if not_before is not None else now() - _DAY
    end = not_after if not_after is not None else now() + 30 * _DAY
    return start, end


def make_ca(
    common_name: str | None = None,
    *,
    issuer: Issued | None = None,
    key_type: KeyType = "ec",
    path_length: int | None = None,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> Issued:
    """Build a CA certificate: a self-signed root, or an intermediate under ``issuer``.

    The result's ``chain`` holds the intermediates above it (empty for a root,
    so a leaf signed by an intermediate gets the right chain automatically).
    Give each CA of one hierarchy its own ``common_name``; the defaults are
    "siptls test CA" and "siptls test intermediate CA".
    """
    if common_name is None:
        common_name = "siptls test CA" if issuer is None else "siptls test intermediate CA"
    key = make_key(key_type)
    start, end = _validity(not_before, not_after)
    subject = _name(common_name)
    signer_key: PrivateKey = key if issuer is None else issuer.key
    issuer_name = subject if issuer is None else issuer.cert.subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    cert = builder.sign(signer_key, hashes.SHA256())
    chain: tuple[x509.Certificate, ...] = ()
    if issuer is not None and _is_intermediate(issuer):
        chain = (issuer.cert, *issuer.chain)
    return Issued(cert=cert, key=key, chain=chain)


def _is_intermediate(ca: Issued) -> bool:
    return ca.cert.issuer != ca.cert.subject


def make_leaf(
    ca: Issued | None,
    *,
    common_name: str | None = None,
    uris: Sequence[str] = (),
    dns: Sequence[str] = (),
    ips: Sequence[str] = (),
    emails: Sequence[str] = (),
    san_der: bytes | None = None,
    server: bool = True,
    client: bool = True,
    key: PrivateKey | None = None,
    key_type: KeyType = "ec",
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> Issued:
    """Build an end-entity certificate signed by ``ca`` (self-signed when ``None``).

    SANs: ``uris`` (e.g. ``"sip:example.com:5061"``), ``dns`` (may contain
    ``"*.example.com"``), ``ips`` (text, v4 or v6) and ``emails``.  When all of
    them are empty the certificate has **no** subjectAltName extension, which
    makes a CN-only certificate (give ``common_name``).  ``san_der`` replaces
    the subjectAltName extension with raw DER bytes, to build malformed
    certificates.  ``server``/``client`` set the extended key usages.
    ``key`` reuses an existing key (handy in loops: saves generating one).
    """
    key = key if key is not None else make_key(key_type)
    start, end = _validity(not_before, not_after)
    subject = _name(common_name)
    issuer_name = subject if ca is None else ca.cert.subject
    signer_key: PrivateKey = key if ca is None else ca.key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if ca is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    names += [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    names += [x509.RFC822Name(e) for e in emails]
    if san_der is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, san_der),
            critical=False,
        )
    elif names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(signer_key, hashes.SHA256())
    chain: tuple[x509.Certificate, ...] = ()
    if ca is not None and _is_intermediate(ca):
        chain = (ca.cert, *ca.chain)
    return Issued(cert=cert, key=key, chain=chain)


def make_cn_only_leaf(ca: Issued | None, common_name: str, **kwargs: Any) -> Issued:
    """Build a certificate whose only identity is its Common Name (no SAN extension)."""
    return make_leaf(ca, common_name=common_name, **kwargs)


def make_expired_leaf(ca: Issued | None, **kwargs: Any) -> Issued:
    """Build a leaf valid from 30 days ago until yesterday (other arguments as make_leaf)."""
    return make_leaf(ca, not_before=now() - 30 * _DAY, not_after=now() - _DAY, **kwargs)


def make_future_leaf(ca: Issued | None, **kwargs: Any) -> Issued:
    """Build a leaf that becomes valid tomorrow (other arguments as make_leaf)."""
    return make_leaf(ca, not_before=now() + _DAY, not_after=now() + 30 * _DAY, **kwargs)


def make_crl(
    ca: Issued,
    revoked: Iterable[x509.Certificate | int] = (),
    *,
    last_update: datetime.datetime | None = None,
    next_update: datetime.datetime | None = None,
    crl_number: int = 1,
) -> x509.CertificateRevocationList:
    """Build a CRL signed by ``ca`` revoking ``revoked`` (certificates or serial numbers).

    By default it was issued yesterday and expires in a week; pass a
    ``next_update`` in the past for an expired CRL.
    """
    last = last_update if last_update is not None else now() - _DAY
    following = next_update if next_update is not None else now() + 7 * _DAY
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(last)
        .next_update(following)
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    for item in revoked:
        serial = item.serial_number if isinstance(item, x509.Certificate) else item
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(last).build()
        )
    return builder.sign(ca.key, hashes.SHA256())


def crl_pem(*crls: x509.CertificateRevocationList) -> bytes:
    """Concatenate the PEM forms of ``crls``."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in crls)
