"""twistd integration: the plugin, its options and its error handling."""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

from siptls import tap
from siptls.service import SIPTLSService

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def twistd(*args: str, cwd: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


class PluginTests(SynchronousTestCase):
    def test_plugin_found(self) -> None:
        """getPlugins(IServiceMaker) finds the siptls service maker."""
        makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
        self.assertIn("siptls", makers)
        self.assertIn("SIP over TLS", makers["siptls"].description)

    def test_help(self) -> None:
        """twistd siptls --help lists the options."""
        result = twistd("siptls", "--help", cwd=self.mktemp_dir())
        self.assertEqual(result.returncode, 0, result.stderr)
        for option in (
            "--listen",
            "--param",
            "--certificate",
            "--private-key",
            "--config",
            "--control",
        ):
            self.assertIn(option, result.stdout)

    def test_config_error_one_line(self) -> None:
        """A bad tls.cfg stops twistd with one line naming file:line and key, no traceback."""
        workdir = self.mktemp_dir()
        with open(os.path.join(workdir, "tls.cfg"), "w") as handle:
            handle.write("[server:default]\nmethod = TLSv9\n")
        result = twistd(
            "-n",
            "--pidfile=",
            "siptls",
            "--no-control",
            "--listen",
            "tls:127.0.0.1:5061",
            "--config",
            "tls.cfg",
            cwd=workdir,
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertNotIn("Traceback", result.stderr + result.stdout)
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertIn("tls.cfg:2:", lines[0])
        self.assertIn("[server:default]", lines[0])
        self.assertIn("TLSv9", lines[0])

    def test_bad_listen(self) -> None:
        """A listen address that is not an IP is refused with one line."""
        result = twistd(
            "-n",
            "--pidfile=",
            "siptls",
            "--no-control",
            "--listen",
            "tls:nowhere:5061",
            cwd=self.mktemp_dir(),
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("not an IP address", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def mktemp_dir(self) -> str:
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        return path


class OptionsTests(SynchronousTestCase):
    def test_service_from_options(self) -> None:
        """Options build a SIPTLSService with the self-signed default and the parameters."""
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        cwd = os.getcwd()
        os.chdir(workdir)
        self.addCleanup(os.chdir, cwd)
        options = tap.Options()
        options.parseOptions(
            [
                "--listen",
                "tls:127.0.0.1:5999",
                "--listen",
                "tls:[::1]:5999",
                "--param",
                "handshake_timeout=3",
                "--no-control",
            ]
        )
        service = tap.makeService(options)
        assert isinstance(service, SIPTLSService)
        self.assertEqual(
            [str(a) for a in service.addresses], ["tls:127.0.0.1:5999", "tls:[::1]:5999"]
        )
        self.assertEqual(service.limits.handshake_timeout, 3)
        self.assertTrue(os.path.exists(os.path.join(workdir, "siptls-selfsigned.pem")))
        self.assertEqual(
            os.stat(os.path.join(workdir, "siptls-selfsigned.key")).st_mode & 0o777, 0o600
        )
        self.assertTrue(any("self-signed" in note for note in service.notices()))
        self.assertIsNone(service.control)

    def test_bad_param_syntax(self) -> None:
        """--param without '=' is a usage error."""
        from twisted.python.usage import UsageError

        with self.assertRaises(UsageError):
            tap.Options().parseOptions(["--param", "verify_depth"])
