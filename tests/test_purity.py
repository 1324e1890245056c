"""The pure modules import neither Twisted nor OpenSSL (STYLE.md)."""

from __future__ import annotations

import ast
import pathlib

from twisted.trial.unittest import SynchronousTestCase

PURE = [
    "errors",
    "framing",
    "message",
    "config",
    "domains",
    "identity",
    "target",
    "listen",
    "certinfo",
    "hostnames",
]
PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "siptls"


class PurityTests(SynchronousTestCase):
    def test_pure_modules(self) -> None:
        """No pure module imports twisted or OpenSSL, directly or through a siptls glue module."""
        glue = {
            "contexts",
            "protocol",
            "service",
            "registry",
            "generation",
            "tlsinfo",
            "tap",
            "resolve",
            "application",
            "control",
            "outgoing",
            "probe",
        }
        for name in PURE:
            tree = ast.parse((PACKAGE / f"{name}.py").read_text())
            for node in ast.walk(tree):
                modules = []
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    modules = [node.module]
                for module in modules:
                    top = module.split(".")[0]
                    self.assertNotIn(top, ("twisted", "OpenSSL"), f"{name} imports {module}")
                    if top == "siptls" and len(module.split(".")) > 1:
                        self.assertNotIn(module.split(".")[1], glue, f"{name} imports {module}")
