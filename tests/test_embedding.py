"""The embedding example of README.rst (and docs/embedding.rst), run exactly as written."""

from __future__ import annotations

import os
import re
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import defer

from siptls.errors import IdentityError
from tests.interop.support import free_port
from tests.test_outgoing import NAME, OutgoingTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "embedding.rst")
README = os.path.join(ROOT, "README.rst")


def code_block(path: str) -> str:
    """The first python code block of a reStructuredText file, dedented."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    match = re.search(r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", text)
    assert match is not None, f"{path} has no python code block"
    return "\n".join(line[4:] for line in match.group(1).splitlines()).strip() + "\n"


def example_namespace() -> dict[str, Any]:
    """Execute the python code block of README.rst; return its globals."""
    namespace: dict[str, Any] = {"__name__": "embedding_example"}
    exec(compile(code_block(README), README, "exec"), namespace)
    return namespace


class EmbeddingExampleTests(OutgoingTestCase):
    def test_docs_match_readme(self) -> None:
        """docs/embedding.rst shows the same code as the README."""
        self.assertEqual(code_block(DOC), code_block(README))

    def start_example(self) -> tuple[dict[str, Any], Any]:
        example = example_namespace()
        client_cert, client_key = self.material.leaf(common_name="carrier client")
        cfg = self.material.tls_cfg(
            f"[server:default]\ncertificate = {self.server_cert}\nprivate_key = {self.server_key}\n"
            "[client:any]\nserver_name = sip.carrier.example\nserver_id = carrier\n"
            f"certificate = {client_cert}\nprivate_key = {client_key}\n"
            "verify_certificate = yes\nrequire_certificate = yes\nca_list = {ca}\n"
        )
        parent = MultiService()
        service = example["add_sip_tls"](parent, cfg, f"tls:127.0.0.1:{free_port()}")
        parent.startService()
        self.addCleanup(self._stop, service)
        return example, service

    @defer.inlineCallbacks
    def test_example_sends_options(self) -> Any:
        """The example sends OPTIONS with the server_id profile; SNI, identity, 200 all seen."""
        example, service = self.start_example()
        peer, port = self.peer(uris=["sip:sip.carrier.example"])
        uri = f"sips:127.0.0.1:{port}"
        connection = yield defer.ensureDeferred(
            example["ping_carrier"](service, uri, "sip.carrier.example")
        )
        self.assertEqual(connection.tls.domain_reason, "server_id")
        self.assertTrue(connection.identity)
        [record] = yield self.established_inbound(peer)
        self.assertEqual(record.sni, "sip.carrier.example")
        for _ in range(100):
            if any(e.startswith("200 on out") for e in service.application.events):
                break
            yield defer.Deferred.fromCoroutine(_sleep(0.02))
        self.assertIn(f"opened out ('127.0.0.1', {port})", service.application.events)
        self.assertIn(f"200 on out {connection.id}", service.application.events)

    @defer.inlineCallbacks
    def test_example_refuses_other_name(self) -> Any:
        """The example's send fails with IdentityError when the peer's certificate is for
        another name."""
        example, service = self.start_example()
        peer, port = self.peer(uris=[f"sip:{NAME}"])
        d = defer.ensureDeferred(
            example["ping_carrier"](service, f"sips:127.0.0.1:{port}", "sip.carrier.example")
        )
        error = yield self.assertFailure(d, IdentityError)
        self.assertIn("sip.carrier.example", str(error))


async def _sleep(seconds: float) -> None:
    from tests.interop.support import deferLater

    await deferLater(seconds)
