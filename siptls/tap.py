"""``twistd siptls``: command-line options and the service they describe.

Everything here is about the command line; the service itself is
:class:`siptls.service.SIPTLSService`, usable without twistd.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from siptls.control.server import default_control_path
from siptls.errors import ConfigError
from siptls.listen import DEFAULT_LISTEN, parse_listen
from siptls.service import SIPTLSService

# Friendly options and the module parameter each one sets.
_ALIASES = {"certificate": "certificate", "private-key": "private_key", "config": "config"}


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Serve SIP over TLS with Kamailio-compatible TLS domains. Module parameters use "
        "Kamailio's names (--param tls_method=TLSv1.2+); --config names a tls.cfg. With no "
        "certificate configured, a self-signed one is generated in the current directory "
        "(siptls-selfsigned.pem/.key) and reused."
    )

    optParameters = [
        ["certificate", "c", None, "PEM certificate chain (module parameter 'certificate')."],
        ["private-key", "k", None, "PEM private key (module parameter 'private_key')."],
        ["config", None, None, "tls.cfg file or directory (module parameter 'config')."],
        [
            "control",
            None,
            None,
            "UNIX socket for siptls-ctl (default: $SIPTLS_CONTROL_SOCKET, "
            "$XDG_RUNTIME_DIR/siptls/control.sock, /run/siptls/control.sock for root, "
            "else ~/.siptls/control.sock).",
        ],
    ]
    optFlags = [["no-control", None, "Do not serve the control socket."]]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["params"] = {}
        self.service: SIPTLSService | None = None

    def opt_listen(self, value: str) -> None:
        """Listen on proto:ip:port, e.g. tls:127.0.0.1:5061 or tls:[::1]:5061
        (repeatable; default tls:0.0.0.0:5061)."""
        self["listen"].append(value)

    opt_l = opt_listen

    def opt_param(self, value: str) -> None:
        """Set a TLS module parameter, NAME=VALUE, with Kamailio's names
        (repeatable), e.g. --param verify_client=optional."""
        name, sep, setting = value.partition("=")
        if not sep or not name.strip():
            raise usage.UsageError(f"--param takes NAME=VALUE, not {value!r}.")
        self["params"][name.strip()] = setting

    opt_p = opt_param

    def postOptions(self) -> None:
        params = dict(self["params"])
        for option, name in _ALIASES.items():
            if self[option] is not None:
                params[name] = self[option]
        try:
            addresses = [parse_listen(v) for v in self["listen"] or [DEFAULT_LISTEN]]
            control = None
            if not self["no-control"]:
                control = self["control"] or default_control_path()
            self.service = SIPTLSService(addresses, params, control_path=control)
        except ConfigError as error:
            sys.stderr.write(f"siptls: {error}\n")
            raise SystemExit(1) from None


def makeService(options: Options) -> IService:
    assert options.service is not None
    service: Any = options.service
    return service
