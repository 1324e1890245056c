"""Interop with baresip, a SIP user agent nobody here wrote (its own TLS stack use)."""

from __future__ import annotations

import os
import re
import socket
from typing import Any

from twisted.internet import defer

from tests.interop.support import ServerTestCase, free_port, require_tool

_ANSI = re.compile(rb"\x1b\[[0-9;]*m")


def free_port_pair() -> int:
    """A port P such that P and P + 1 are free on 127.0.0.1 (baresip takes both: SIP, TLS)."""
    for _ in range(50):
        port = free_port()
        if port >= 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two adjacent free ports on 127.0.0.1")


class BaresipTests(ServerTestCase):
    def write_config(self, config: str, workdir: str) -> None:
        """baresip's config: only the modules needed for /options, TLS by default."""
        with open(os.path.join(config, "config"), "w") as handle:
            handle.write(
                "module_path /usr/lib/baresip/modules\nmodule account.so\nmodule menu.so\n"
                f"sip_listen 127.0.0.1:{free_port_pair()}\n"
                f"sip_cafile {os.path.join(workdir, 'siptls-selfsigned.pem')}\n"
                "sip_trans_def tls\n"
            )

    @defer.inlineCallbacks
    def test_options_from_baresip(self) -> Any:
        """baresip's /options over TLS gets 200 OK, with its rport filled in and the connection
        listed in the registry."""
        baresip = require_tool("baresip")
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        service = self.start_server(workdir=workdir)
        port = self.port_of(service)
        config = os.path.join(workdir, "baresip")
        os.makedirs(config)
        self.write_config(config, workdir)
        with open(os.path.join(config, "accounts"), "w") as handle:
            handle.write(
                "<sip:alice@example.test;transport=tls>;"
                f'outbound="sip:127.0.0.1:{port};transport=tls";regint=0\n'
            )
        target = f"sip:siptls@127.0.0.1:{port};transport=tls"
        for _attempt in range(3):
            out, err, code = yield self.run_tool(
                baresip, ["-f", config, "-s", "-e", f"/options {target}", "-t", "4"], timeout=20
            )
            text = _ANSI.sub(b"", out + err).decode("utf-8", "replace")
            if "Address already in use" not in text:
                break
            # Another test took baresip's port meanwhile: pick a new pair.
            self.write_config(config, workdir)
        result = text.split("----- OPTIONS of", 1)
        self.assertEqual(len(result), 2, text[-2000:])
        self.assertIn("SIP/2.0 200 OK", result[1])
        self.assertRegex(result[1], r"Via: SIP/2\.0/TLS [^\r\n]*;rport=\d+;received=127\.0\.0\.1")
        self.assertEqual(service.registry.info()["handshakes_ok"], 1)
