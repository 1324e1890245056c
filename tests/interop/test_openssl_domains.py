"""TLS domains against ``openssl s_client`` on loopback: the certificate chosen per
IP:port and SNI, sni_strict, verification, methods, startup errors, and the
Kamailio sample tls.cfg serving.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher

from tests.certs import cert_pem
from tests.domainkit import TestPKI, write_cfg
from tests.interop.support import ServerTestCase, free_port, require_tool, run_process, sip_options
from tests.test_config import SAMPLE
from tests.test_tls_domains import SELECTION_CFG, SERVER_STEMS

ANSWERED = b"Content-Length: 0\r\n\r\n"
WORKTREE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class OpenSSLDomainTests(ServerTestCase):
    def setUp(self) -> None:
        self.openssl = require_tool("openssl")
        self.dir = os.path.abspath(self.mktemp())
        self.pki = TestPKI(self.dir)
        self.logs: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            self.logs.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def serve(self, cfg: str, listen: list[str], params: dict[str, str] | None = None) -> Any:
        write_cfg(self.dir, cfg)
        merged = {"config": "tls.cfg", **(params or {})}
        return self.start_server(merged, listen, workdir=self.dir)

    @defer.inlineCallbacks
    def s_client(self, address: str, *args: str) -> Any:
        """Run s_client with OPTIONS; (answered?, certificate CN, all output as text)."""
        out, err, _code = yield self.run_tool(
            self.openssl,
            ["s_client", "-connect", address, *args],
            stdin=sip_options(),
            until=ANSWERED,
        )
        text = (out + err).decode("latin-1")
        match = re.search(r"^subject=.*?CN ?= ?([^,/\n]+)", text, re.MULTILINE)
        return ANSWERED in out, (match.group(1).strip() if match else None), text

    def client_args(self, name: str) -> list[str]:
        """-cert/-key (and -cert_chain) for one of the PKI's client scenarios."""
        issued = self.pki.clients[name]
        assert issued is not None
        cert, key = issued.write(self.dir, f"client-{name}")
        chain = self.pki.write(f"client-{name}-chain.pem", cert_pem(*issued.chain))
        args = ["-cert", cert, "-key", key]
        if issued.chain:
            args += ["-cert_chain", chain]
        return args

    @defer.inlineCallbacks
    def test_selection_by_address_and_sni(self) -> None:
        """s_client with and without -servername gets exactly the certificate tls.cfg names
        for 127.0.0.1:P and 127.0.0.2:P (case variants, modes 0/1/2, unknown names)."""
        for stem in SERVER_STEMS:
            self.pki.server(stem)
        port = free_port()
        cfg = SELECTION_CFG.replace(":5061]", f":{port}]")
        self.serve(cfg, [f"tls:127.0.0.1:{port}", f"tls:127.0.0.2:{port}"])
        cases = {
            ("127.0.0.1", None): "ip1-a",
            ("127.0.0.1", "A.EXAMPLE.com"): "ip1-a",
            ("127.0.0.1", "b.example.com"): "ip1-b",
            ("127.0.0.1", "x.y.b.example.com"): "ip1-b",
            ("127.0.0.1", "example.org"): "ip1-a",
            ("127.0.0.1", "www.example.org"): "any-org",
            ("127.0.0.1", "nope.invalid"): "ip1-a",
            ("127.0.0.2", None): "ip2",
            ("127.0.0.2", "a.example.com"): "ip2",
            ("127.0.0.2", "Example.NET"): "any-net",
        }
        seen = {}
        for (host, sni), _expected in cases.items():
            args = ["-servername", sni] if sni else ["-noservername"]
            answered, cn, text = yield self.s_client(f"{host}:{port}", *args)
            self.assertTrue(answered, text)
            seen[(host, sni)] = cn
        self.assertEqual(seen, cases)

    @defer.inlineCallbacks
    def test_sni_strict(self) -> None:
        """With sni_strict=yes an unknown name gets an unrecognized_name alert; a known
        name is served."""
        for stem in SERVER_STEMS:
            self.pki.server(stem)
        port = free_port()
        cfg = SELECTION_CFG.replace(":5061]", f":{port}]")
        self.serve(cfg, [f"tls:127.0.0.1:{port}", f"tls:127.0.0.2:{port}"], {"sni_strict": "yes"})
        answered, _, text = yield self.s_client(f"127.0.0.1:{port}", "-servername", "nope.invalid")
        self.assertFalse(answered)
        self.assertIn("unrecognized name", text)
        answered, cn, text = yield self.s_client(
            f"127.0.0.1:{port}", "-servername", "b.example.com"
        )
        self.assertEqual((answered, cn), (True, "ip1-b"), text)

    @defer.inlineCallbacks
    def test_sni_domain_demands_client_certificate(self) -> None:
        """Socket domain verify off, SNI domain verify_client=on: s_client without -cert is
        refused there (logged as no certificate) and accepted with a valid one."""
        for stem in ("default", "open", "secure"):
            self.pki.server(stem)
        port = free_port()
        cfg = (
            "[server:default]\ncertificate = default.pem\nprivate_key = default.key\n"
            f"[server:127.0.0.1:{port}]\ncertificate = open.pem\nprivate_key = open.key\n"
            "server_name = open.example.com\n"
            "[server:any]\ncertificate = secure.pem\nprivate_key = secure.key\n"
            "server_name = secure.example.com\nverify_client = on\nca_list = ca.pem\n"
        )
        self.serve(cfg, [f"tls:127.0.0.1:{port}"])
        address = f"127.0.0.1:{port}"
        answered, cn, text = yield self.s_client(address, "-noservername")
        self.assertEqual((answered, cn), (True, "open"), text)
        answered, _, text = yield self.s_client(address, "-servername", "secure.example.com")
        self.assertFalse(answered, text)
        self.assertTrue(any("failed: no certificate" in line for line in self.logs), self.logs)
        answered, cn, text = yield self.s_client(
            address, "-servername", "secure.example.com", *self.client_args("valid")
        )
        self.assertEqual((answered, cn), (True, "secure"), text)

    @defer.inlineCallbacks
    def test_verification_subset(self) -> None:
        """verify_client=on: a valid chain is served; expired, revoked and unknown-CA
        certificates are refused with the reason in the log; optional_no_ca serves an
        expired one and logs its real verdict."""
        self.pki.server("default")
        self.pki.server("lenient")
        port = free_port()
        cfg = (
            "[server:default]\ncertificate = default.pem\nprivate_key = default.key\n"
            "ca_list = ca.pem\ncrl = crl.pem\nverify_client = on\n"
            f"[server:127.0.0.1:{port}]\ncertificate = lenient.pem\nprivate_key = lenient.key\n"
            "ca_list = ca.pem\ncrl = crl.pem\nverify_client = optional_no_ca\n"
        )
        other = free_port("127.0.0.2")
        self.serve(cfg, [f"tls:127.0.0.2:{other}", f"tls:127.0.0.1:{port}"])
        strict = f"127.0.0.2:{other}"
        answered, cn, text = yield self.s_client(strict, *self.client_args("valid"))
        self.assertEqual((answered, cn), (True, "default"), text)
        for name, reason in (
            ("expired", "certificate has expired"),
            ("revoked", "certificate revoked"),
            ("unknown_ca", "unable to get local issuer certificate"),
        ):
            del self.logs[:]
            answered, _, text = yield self.s_client(strict, *self.client_args(name))
            self.assertFalse(answered, (name, text))
            failed = [line for line in self.logs if "handshake" in line and "failed" in line]
            self.assertEqual(len(failed), 1, (name, self.logs))
            self.assertIn(f"certificate verification failed: {reason}", failed[0])
        del self.logs[:]
        answered, cn, text = yield self.s_client(f"127.0.0.1:{port}", *self.client_args("expired"))
        self.assertEqual((answered, cn), (True, "lenient"), text)
        established = [line for line in self.logs if "established" in line]
        self.assertIn("peer certificate: certificate has expired (depth 0)", established[0])

    @defer.inlineCallbacks
    def test_methods(self) -> None:
        """method TLSv1.2 refuses 1.3, TLSv1.3 refuses 1.2, TLSv1.2+ takes both, none takes
        1.1; cipher_list applies to TLS 1.2, and as TLS 1.3 suites for TLSv1.3."""
        self.pki.server("default")
        p12, p13, p12plus = free_port(), free_port(), free_port()
        cfg = (
            "[server:default]\ncertificate = default.pem\nprivate_key = default.key\n"
            f"[server:127.0.0.1:{p12}]\nmethod = TLSv1.2\ncertificate = default.pem\n"
            "private_key = default.key\ncipher_list = ECDHE-ECDSA-AES128-GCM-SHA256\n"
            f"[server:127.0.0.1:{p13}]\nmethod = TLSv1.3\ncertificate = default.pem\n"
            "private_key = default.key\ncipher_list = TLS_CHACHA20_POLY1305_SHA256\n"
            f"[server:127.0.0.1:{p12plus}]\nmethod = TLSv1.2+\ncertificate = default.pem\n"
            "private_key = default.key\n"
        )
        self.serve(cfg, [f"tls:127.0.0.1:{p}" for p in (p12, p13, p12plus)])
        results = {}
        ciphers = {}
        for label, port in (("1.2", p12), ("1.3", p13), ("1.2+", p12plus)):
            for flag in ("-tls1_1", "-tls1_2", "-tls1_3"):
                answered, _, text = yield self.s_client(f"127.0.0.1:{port}", flag)
                results[(label, flag)] = answered
                found = re.search(r"Cipher is (\S+)", text)
                if answered and found:
                    ciphers[(label, flag)] = found.group(1)
        self.assertEqual(
            results,
            {
                ("1.2", "-tls1_1"): False,
                ("1.2", "-tls1_2"): True,
                ("1.2", "-tls1_3"): False,
                ("1.3", "-tls1_1"): False,
                ("1.3", "-tls1_2"): False,
                ("1.3", "-tls1_3"): True,
                ("1.2+", "-tls1_1"): False,
                ("1.2+", "-tls1_2"): True,
                ("1.2+", "-tls1_3"): True,
            },
        )
        self.assertEqual(ciphers[("1.2", "-tls1_2")], "ECDHE-ECDSA-AES128-GCM-SHA256")
        self.assertEqual(ciphers[("1.3", "-tls1_3")], "TLS_CHACHA20_POLY1305_SHA256")

    @defer.inlineCallbacks
    def test_kamailio_sample_serves(self) -> None:
        """The Kamailio sample tls.cfg (its IP domain moved to loopback) serves: the IP
        domain requires and verifies a client certificate; the default domain serves the
        other socket."""
        cert, key = self.pki.server("kamailio.sip-server.net")
        os.rename(cert, os.path.join(self.dir, "kamailio_cert.pem"))
        os.rename(key, os.path.join(self.dir, "kamailio_key.pem"))
        cert, key = self.pki.server("kamailio-selfsigned")
        for name in ("local_ca.pem", "default_ca.pem"):
            self.pki.write(name, open(self.pki.ca_file, "rb").read())
        for name in ("local_crl.pem", "default_crl.pem"):
            self.pki.write(name, open(self.pki.crl_file, "rb").read())
        client_cert, client_key = self.pki.server("client-default")
        os.rename(client_cert, os.path.join(self.dir, "default_cert.pem"))
        os.rename(client_key, os.path.join(self.dir, "default_key.pem"))
        port = free_port()
        other = free_port("127.0.0.2")
        cfg = SAMPLE.replace("10.0.0.10:5061", f"127.0.0.1:{port}")
        self.serve(cfg, [f"tls:127.0.0.1:{port}", f"tls:127.0.0.2:{other}"])
        answered, cn, text = yield self.s_client(f"127.0.0.1:{port}", *self.client_args("valid"))
        self.assertEqual((answered, cn), (True, "kamailio.sip-server.net"), text)
        answered, _, text = yield self.s_client(f"127.0.0.1:{port}")
        self.assertFalse(answered, text)
        answered, cn, text = yield self.s_client(f"127.0.0.2:{other}")
        self.assertEqual((answered, cn), (True, "kamailio-selfsigned"), text)
        # The sample's [server:any] sections require a verified certificate but name no
        # ca_list, and there is no system trust: reachable by SNI, yet nothing verifies.
        del self.logs[:]
        answered, cn, text = yield self.s_client(
            f"127.0.0.2:{other}", "-servername", "www.sip-server.net", *self.client_args("valid")
        )
        self.assertEqual((answered, cn), (False, "kamailio.sip-server.net"), text)
        self.assertTrue(
            any("unable to get local issuer certificate" in line for line in self.logs), self.logs
        )


class TwistdStartupErrorTests(ServerTestCase):
    @defer.inlineCallbacks
    def test_bad_config_one_line_no_traceback(self) -> None:
        """twistd siptls --config with a key that does not match its certificate exits
        non-zero with one stderr line naming file, line and key, and no traceback."""
        directory = os.path.abspath(self.mktemp())
        pki = TestPKI(directory)
        pki.server("one")
        pki.server("two")
        write_cfg(
            directory, "[server:default]\ncertificate = one.pem\nprivate_key = two.key\n", "bad.cfg"
        )
        env = {"PYTHONPATH": WORKTREE, "SIPTLS_CONTROL_SOCKET": os.path.join(directory, "c.sock")}
        out, err, code = yield run_process(
            sys.executable,
            [
                "-c",
                f"import os; os.chdir({directory!r}); "
                "from twisted.scripts.twistd import run; run()",
                "-n",
                "--pidfile=",
                "--logfile=-",
                "siptls",
                "--no-control",
                "--config",
                "bad.cfg",
                "--listen",
                f"tls:127.0.0.1:{free_port()}",
            ],
            env=env,
            timeout=30,
        )
        lines = err.decode().strip().splitlines()
        self.assertNotEqual(code, 0)
        self.assertNotIn(b"Traceback", out + err)
        self.assertEqual(len(lines), 1, err)
        self.assertTrue(
            lines[0].startswith("siptls: bad.cfg:3: [server:default] private_key"), lines
        )
        self.assertIn("does not match", lines[0])
