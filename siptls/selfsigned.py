"""The self-signed certificate siptls serves when none is configured.

Like Kamailio's ``tls_cert.sh`` it is made once and reused: an ECDSA P-256
key and a certificate naming this host and the loopback addresses.  The
key file is created readable by its owner only.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["SelfSigned", "ensure_self_signed", "fingerprint"]

CERTIFICATE_NAME = "siptls-selfsigned.pem"
KEY_NAME = "siptls-selfsigned.key"
VALIDITY_DAYS = 365


@dataclass(frozen=True, slots=True)
class SelfSigned:
    certificate: Path
    private_key: Path
    created: bool
    fingerprint: str


def fingerprint(certificate_pem: bytes) -> str:
    """The SHA-256 fingerprint of a PEM certificate, as colon-separated hex."""
    cert = x509.load_pem_x509_certificate(certificate_pem)
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def ensure_self_signed(
    directory: str | os.PathLike[str], hostname: str | None = None
) -> SelfSigned:
    """Return the self-signed pair in ``directory``, creating it if absent."""
    folder = Path(directory)
    cert_path = folder / CERTIFICATE_NAME
    key_path = folder / KEY_NAME
    if cert_path.exists() and key_path.exists():
        return SelfSigned(cert_path, key_path, False, fingerprint(cert_path.read_bytes()))
    name = hostname or socket.getfqdn() or "localhost"
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Self-signed certificate for siptls"),
            x509.NameAttribute(NameOID.COMMON_NAME, name[:64]),
        ]
    )
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys([name, "localhost"])]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as key_file:
        key_file.write(key_pem)
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert_pem)
    return SelfSigned(cert_path, key_path, True, fingerprint(cert_pem))
