"""siptls-probe: one OPTIONS through the outgoing machinery, with a verdict."""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.internet import defer, reactor

from siptls.probe import EXIT_NOT_VERIFIED, EXIT_OK, EXIT_UNREACHABLE, probe
from tests.interop.support import free_port, run_process
from tests.test_outgoing import NAME, OutgoingTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ProbeTests(OutgoingTestCase):
    def verifying(self) -> dict[str, str]:
        return {"verify_certificate": "1", "ca_list": self.material.ca_path}

    @defer.inlineCallbacks
    def run_probe(self, uri: str, params: dict[str, str], **kwargs: Any) -> Any:
        return (yield defer.ensureDeferred(probe(reactor, uri, params, timeout=5, **kwargs)))

    @defer.inlineCallbacks
    def test_verified_2xx(self) -> Any:
        """A verified peer answering 200: exit 0; TLS, domain, certificate and identity shown."""
        peer, port = self.peer()
        result = yield self.run_probe(f"sips:127.0.0.1:{port}", self.verifying(), server_name=NAME)
        text = "\n".join(result.lines)
        self.assertEqual(result.code, EXIT_OK, text)
        self.assertEqual(result.lines[0], "status: SIP/2.0 200 OK")
        self.assertIn("tls: TLSv1.3", text)
        self.assertIn("client domain: TLSc<default> (chosen by default)", text)
        self.assertIn(f"server name sent: {NAME}", text)
        self.assertIn(f"URI:sip:{NAME}", text)
        self.assertIn("notAfter", text)
        self.assertIn("identity: ok", text)

    @defer.inlineCallbacks
    def test_wrong_name(self) -> Any:
        """A certificate for another name: non-zero, the reason names the identity mismatch."""
        peer, port = self.peer()
        result = yield self.run_probe(
            f"sips:127.0.0.1:{port}", self.verifying(), server_name="other.example.test"
        )
        self.assertEqual(result.code, EXIT_UNREACHABLE)
        self.assertIn("other.example.test", result.lines[-1])

    @defer.inlineCallbacks
    def test_unverified(self) -> Any:
        """Without verify_certificate the 200 is reported but the exit status is 1."""
        peer, port = self.peer()
        result = yield self.run_probe(f"sips:127.0.0.1:{port}", {}, server_name=NAME)
        self.assertEqual(result.code, EXIT_NOT_VERIFIED)
        self.assertIn("not verified", result.lines[-1])
        self.assertEqual(result.lines[0], "status: SIP/2.0 200 OK")

    @defer.inlineCallbacks
    def test_unreachable(self) -> Any:
        """A closed port: exit 2 and the reason."""
        result = yield self.run_probe(f"sips:127.0.0.1:{free_port()}", {})
        self.assertEqual(result.code, EXIT_UNREACHABLE)
        self.assertIn("could not connect", result.lines[-1])

    @defer.inlineCallbacks
    def test_command_line(self) -> Any:
        """The console script entry point: --param, --server-name, --server-id and exit 0."""
        peer, port = self.peer()
        cfg = self.material.tls_cfg(
            "[client:any]\nserver_name = other.test\nserver_id = carrier\n"
            "verify_certificate = yes\nca_list = {ca}\n"
        )
        out, err, code = yield run_process(
            sys.executable,
            [
                "-m",
                "siptls.probe",
                f"sips:127.0.0.1:{port}",
                "--config",
                cfg,
                "--server-name",
                NAME,
                "--server-id",
                "carrier",
                "--param",
                "tls_method=TLSv1.2+",
            ],
            env={"PYTHONPATH": ROOT},
        )
        self.assertEqual(code, 0, out + err)
        self.assertIn(b"client domain: TLSc<any:other.test> (chosen by server_id)", out)
