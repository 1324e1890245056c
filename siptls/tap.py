"""``twistd siptls``: command-line options and the service they describe.

Everything here is about the command line; the service itself is
:class:`siptls.service.SIPTLSService`, usable without twistd.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.application.service import IService
from twisted.logger import Logger
from twisted.python import usage

from siptls.contexts import ContextSettings
from siptls.errors import ConfigError
from siptls.listen import DEFAULT_LISTEN, ListenAddress, parse_listen
from siptls.selfsigned import ensure_self_signed
from siptls.service import SIPTLSService, single_domain_generation

log = Logger(namespace="siptls.tap")


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Serve SIP over TLS. With no certificate configured, a self-signed one is "
        "generated in the current directory (siptls-selfsigned.pem/.key) and reused."
    )

    optParameters = [
        ["certificate", "c", None, "PEM certificate chain (module parameter 'certificate')."],
        ["private-key", "k", None, "PEM private key (module parameter 'private_key')."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self.addresses: list[ListenAddress] = []
        self.generation: Any = None
        self.notes: list[str] = []

    def opt_listen(self, value: str) -> None:
        """Listen on proto:ip:port, e.g. tls:127.0.0.1:5061 or tls:[::1]:5061
        (repeatable; default tls:0.0.0.0:5061)."""
        self["listen"].append(value)

    opt_l = opt_listen

    def postOptions(self) -> None:
        try:
            self.addresses = [parse_listen(v) for v in self["listen"] or [DEFAULT_LISTEN]]
            certificate = self["certificate"]
            private_key = self["private-key"]
            if certificate is None:
                generated = ensure_self_signed(os.getcwd())
                certificate, private_key = str(generated.certificate), str(generated.private_key)
                self.notes.append(
                    f"{'Generated' if generated.created else 'Using'} the self-signed certificate "
                    f"{certificate} (SHA-256 {generated.fingerprint}); configure a real one for "
                    "production."
                )
            settings = ContextSettings(
                name="TLSs<default>",
                certificate=os.path.abspath(certificate),
                private_key=os.path.abspath(private_key) if private_key else None,
                origins={"certificate": ("--certificate", None), "private_key": ("--private-key", None)},
            )
            self.generation = single_domain_generation(settings)
        except ConfigError as error:
            sys.stderr.write(f"siptls: {error}\n")
            raise SystemExit(1) from None


def makeService(options: Options) -> IService:
    for note in options.notes:
        log.warn("{note}", note=note)
    return SIPTLSService(options.addresses, options.generation)
