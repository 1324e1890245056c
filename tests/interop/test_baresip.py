"""Interop with baresip, a SIP user agent nobody here wrote (its own TLS stack use)."""

from __future__ import annotations

import os
import re
from typing import Any

from twisted.internet import defer

from tests.interop.support import ServerTestCase, free_port, require_tool

_ANSI = re.compile(rb"\x1b\[[0-9;]*m")


class BaresipTests(ServerTestCase):
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
        modules = "/usr/lib/baresip/modules"
        with open(os.path.join(config, "config"), "w") as handle:
            handle.write(
                f"module_path {modules}\nmodule account.so\nmodule menu.so\n"
                f"sip_listen 127.0.0.1:{free_port()}\n"
                f"sip_cafile {os.path.join(workdir, 'siptls-selfsigned.pem')}\n"
                "sip_trans_def tls\n"
            )
        with open(os.path.join(config, "accounts"), "w") as handle:
            handle.write(
                "<sip:alice@example.test;transport=tls>;"
                f'outbound="sip:127.0.0.1:{port};transport=tls";regint=0\n'
            )
        target = f"sip:siptls@127.0.0.1:{port};transport=tls"
        out, err, code = yield self.run_tool(
            baresip, ["-f", config, "-s", "-e", f"/options {target}", "-t", "4"], timeout=20
        )
        text = _ANSI.sub(b"", out + err).decode("utf-8", "replace")
        result = text.split("----- OPTIONS of", 1)
        self.assertEqual(len(result), 2, text[-2000:])
        self.assertIn("SIP/2.0 200 OK", result[1])
        self.assertRegex(result[1], r"Via: SIP/2\.0/TLS [^\r\n]*;rport=\d+;received=127\.0\.0\.1")
        self.assertEqual(service.registry.info()["handshakes_ok"], 1)
