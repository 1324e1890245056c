"""Shared pieces for the TLS-domain tests: a test PKI on disk, tls.cfg
generations, and a raw pyOpenSSL client for in-memory handshakes.

Everything is generated at run time; no key is committed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

from siptls.contexts import ContextGeneration
from siptls.generation import ConfigLoader
from tests.certs import (
    Issued,
    cert_pem,
    crl_pem,
    make_ca,
    make_crl,
    make_expired_leaf,
    make_future_leaf,
    make_leaf,
)

VERSIONS = {
    "1.1": SSL.TLS1_1_VERSION,
    "1.2": SSL.TLS1_2_VERSION,
    "1.3": SSL.TLS1_3_VERSION,
}


def common_name(certificate: x509.Certificate | None) -> str | None:
    """The CN of ``certificate`` (None when there is no certificate)."""
    if certificate is None:
        return None
    values = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


class TestPKI:
    """A root CA, two intermediate levels, and client certificates for every verdict.

    ``clients`` maps a scenario name to the certificate a client presents
    (``None`` for "no certificate"): ``valid`` (leaf <- int1 <- root),
    ``deep`` (leaf <- int2 <- int1 <- root), ``unknown_ca``, ``expired``,
    ``future``, ``revoked`` (revoked by int1's CRL) and ``self_signed``.
    ``ca_file`` holds the root; ``crl_file`` one CRL per CA level, which
    CRL_CHECK_ALL needs.
    """

    __test__ = False

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self.root = make_ca("siptls test root")
        self.int1 = make_ca("siptls test int1", issuer=self.root)
        self.int2 = make_ca("siptls test int2", issuer=self.int1)
        self.other_root = make_ca("siptls unknown root")
        self.clients: dict[str, Issued | None] = {
            "valid": make_leaf(
                self.int1,
                common_name="alice",
                uris=["sip:alice@example.com"],
                emails=["alice@example.com"],
                dns=["alice.example.com"],
                ips=["192.0.2.7"],
                server=False,
            ),
            "deep": make_leaf(self.int2, common_name="deep client", server=False),
            "unknown_ca": make_leaf(self.other_root, common_name="stranger", server=False),
            "expired": make_expired_leaf(self.int1, common_name="expired client", server=False),
            "future": make_future_leaf(self.int1, common_name="future client", server=False),
            "revoked": make_leaf(self.int1, common_name="revoked client", server=False),
            "self_signed": make_leaf(None, common_name="self-signed client", server=False),
            "none": None,
        }
        revoked = self.clients["revoked"]
        assert revoked is not None
        self.ca_file = self.write("ca.pem", cert_pem(self.root.cert))
        self.crl_file = self.write(
            "crl.pem",
            crl_pem(
                make_crl(self.root),
                make_crl(self.int1, revoked=[revoked.cert]),
                make_crl(self.int2),
            ),
        )
        self.root_crl_only = self.write("root-crl.pem", crl_pem(make_crl(self.root)))
        self._servers: dict[str, Issued] = {}

    def write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.directory, name)
        with open(path, "wb") as handle:
            handle.write(data)
        return path

    def server(self, stem: str, password: bytes | None = None, **names: Any) -> tuple[str, str]:
        """Issue a server certificate with CN ``stem`` (signed by int1); write it; paths."""
        leaf = make_leaf(self.int1, common_name=stem, client=False, **names)
        self._servers[stem] = leaf
        return leaf.write(self.directory, stem, password)

    def issued(self, stem: str) -> Issued:
        return self._servers[stem]


def write_cfg(directory: str, text: str, name: str = "tls.cfg") -> str:
    path = os.path.join(directory, name)
    with open(path, "w") as handle:
        handle.write(text)
    return path


def load_generation(
    directory: str,
    cfg_text: str | None,
    listen: Sequence[tuple[str, int]] = (("127.0.0.1", 5061),),
    params: Mapping[str, str] | None = None,
) -> ContextGeneration:
    """The generation a server would build from ``params`` and a tls.cfg with ``cfg_text``."""
    merged = dict(params or {})
    if cfg_text is not None:
        write_cfg(directory, cfg_text)
        merged["config"] = "tls.cfg"  # relative to the work directory, as an operator writes it
    return ConfigLoader(merged, listen, directory).load(1).generation


@implementer(IOpenSSLClientConnectionCreator)
class RawClient:
    """A test TLS client: no server verification, optional SNI and client certificate."""

    def __init__(
        self,
        server_name: str | None = None,
        certificate: Issued | None = None,
        min_version: str | None = None,
        max_version: str | None = None,
    ) -> None:
        self.server_name = server_name
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_verify(SSL.VERIFY_NONE)
        if min_version:
            context.set_min_proto_version(VERSIONS[min_version])
        if max_version:
            context.set_max_proto_version(VERSIONS[max_version])
        if certificate is not None:
            context.use_certificate(certificate.cert)
            for extra in certificate.chain:
                context.add_extra_chain_cert(extra)
            context.use_privatekey(certificate.key)
        self.context = context

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self.context, None)
        if self.server_name is not None:
            connection.set_tlsext_host_name(self.server_name.encode("ascii"))
        return connection


def remember_protocols(server: Any) -> list[Any]:
    """Make ``server`` (a :class:`tests.tlsloop.Server`) keep every SIP protocol it builds.

    Twisted drops the TLS protocol's reference to the SIP protocol when the
    connection is lost, and a failed handshake is exactly what a test wants
    to look at afterwards.
    """
    built: list[Any] = []
    factory = server.sip_factory
    original = factory.buildProtocol

    def build(addr: Any) -> Any:
        protocol = original(addr)
        built.append(protocol)
        return protocol

    factory.buildProtocol = build
    return built
