"""Operations end to end: real openssl clients, the control socket, siptls-ctl, reload, timeouts.

The server is a real `SIPTLSService` on loopback in the trial reactor, with
its control socket in a private temporary directory.  Clients are
``openssl s_client`` processes kept open while the control channel lists,
kills and reloads; ``siptls-ctl`` runs in-process (`siptls.control.cli.run`)
and, where its exit status and error output matter, as a real subprocess.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

import siptls
from siptls.control.cli import parse_args, run
from siptls.service import SIPTLSService
from tests.certs import Issued, make_ca, make_leaf
from tests.interop.peers import Peer, local_port, run_closing_stdin, s_client, spawn
from tests.interop.support import ServerTestCase, deferLater, free_port, require_tool, sip_options

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(siptls.__file__)))

TLS_CFG = "[server:default]\ncertificate = server.pem\nprivate_key = server.key\n"
# Line 4 has a value verify_depth cannot take.
BROKEN_TLS_CFG = TLS_CFG + "verify_depth = lots\n"


class OpsTestCase(ServerTestCase):
    """Starts a service with a tls.cfg and a control socket; runs siptls-ctl."""

    def setUp(self) -> None:
        self.openssl = require_tool("openssl")
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.ca = make_ca("siptls ops CA")
        self.write_identity("first.example")
        self.cfg = os.path.join(self.dir, "tls.cfg")
        with open(self.cfg, "w") as f:
            f.write(TLS_CFG)
        # A short path: UNIX socket paths are limited to about 100 bytes.
        control_dir = tempfile.mkdtemp(prefix="siptls-ops-")
        self.addCleanup(shutil.rmtree, control_dir, True)
        self.control = os.path.join(control_dir, "ctl", "control.sock")

    def write_identity(self, name: str) -> Issued:
        leaf = make_leaf(self.ca, common_name=name, dns=[name], key=self.ca.key)
        leaf.write(self.dir, "server")
        return leaf

    def start(self, **params: str) -> SIPTLSService:
        service = SIPTLSService(
            [f"tls:127.0.0.1:{free_port()}"],
            {"config": self.cfg, **params},
            workdir=self.dir,
            reactor=reactor,
            control_path=self.control,
        )
        service.startService()
        self.addCleanup(self._stop, service)
        return service

    def client(self, port: int, *extra: str) -> Peer:
        peer = s_client(self.openssl, port, *extra)
        self.addCleanup(self._end, peer)
        return peer

    @defer.inlineCallbacks
    def _end(self, peer: Peer) -> Any:
        peer.kill()
        if peer.exit_code is None:
            yield peer.ended

    @defer.inlineCallbacks
    def ctl(self, *argv: str) -> Any:
        """siptls-ctl --json in-process: (exit status, parsed JSON or None, error text)."""
        out, err = io.StringIO(), io.StringIO()
        args = parse_args(["--control", self.control, "--json", *argv])
        code = yield defer.Deferred.fromCoroutine(run(reactor, args, out, err))
        text = out.getvalue()
        return code, (json.loads(text) if text.strip() else None), err.getvalue()

    def ctl_process(self, *argv: str) -> defer.Deferred[tuple[bytes, bytes, int]]:
        """The real siptls-ctl, as a subprocess: (stdout, stderr, exit status)."""
        return run_closing_stdin(
            sys.executable,
            ["-m", "siptls.control.cli", "--control", self.control, *argv],
            env={"PYTHONPATH": _REPO},
        )


def subject_seen(peer: Peer) -> str:
    for line in peer.out.splitlines():
        if line.startswith(b"subject="):
            return line.decode()
    return ""


class ControlEndToEndTests(OpsTestCase):
    @defer.inlineCallbacks
    def test_list_kill_reload(self) -> None:
        """tls.list shows live openssl clients with their facts; tls.kill closes the right
        one; tls.reload changes the certificate new clients get while an old connection
        keeps answering; a broken tls.cfg is refused (exit 1, one line naming
        tls.cfg:4) and the running certificate stays; the old generation is released
        when its last connection closes."""
        service = self.start()
        port = self.port_of(service)
        mode = stat.S_IMODE(os.stat(self.control).st_mode)
        self.assertEqual(mode, 0o600, oct(mode))

        first, second = self.client(port), self.client(port)
        for peer in (first, second):
            yield peer.wait_for(b"Cipher is ")
            self.assertIn("CN = first.example", subject_seen(peer))
            peer.write(sip_options(n=1))
            yield peer.wait_for(b"SIP/2.0 200 OK")

        code, listing, err = yield self.ctl("tls.list")
        self.assertEqual(code, 0, err)
        self.assertEqual(listing["total"], 2)
        by_port = {entry["remote_port"]: entry for entry in listing["connections"]}
        ports = {peer: local_port(peer.pid, port) for peer in (first, second)}
        self.assertEqual(set(by_port), set(ports.values()))
        for entry in by_port.values():
            self.assertEqual(entry["state"], "established")
            self.assertEqual(entry["local_port"], port)
            self.assertEqual(entry["tls_version"], "TLSv1.3")
            self.assertTrue(entry["cipher"].startswith("TLS_"), entry["cipher"])
            self.assertEqual(entry["domain"], "TLSs<default>")
            self.assertEqual(entry["generation"], 1)

        # Kill the first client's connection: only it ends.
        victim = by_port[ports[first]]["id"]
        code, killed, err = yield self.ctl("tls.kill", str(victim))
        self.assertEqual((code, killed["killed"]["id"]), (0, victim), err)
        yield first.ended.addTimeout(10, reactor)
        second.write(sip_options(n=2))
        yield second.wait_for(b"SIP/2.0 200 OK", count=2)

        # Reload with a new certificate: new clients get it, the old one still answers.
        self.write_identity("second.example")
        code, answer, err = yield self.ctl("tls.reload")
        self.assertEqual((code, answer), (0, {"generation": 2}), err)
        third = self.client(port)
        yield third.wait_for(b"Cipher is ")
        self.assertIn("CN = second.example", subject_seen(third))
        second.write(sip_options(n=3))
        yield second.wait_for(b"SIP/2.0 200 OK", count=3)
        code, info, err = yield self.ctl("tls.info")
        self.assertEqual(info["generations"], {"1": 1, "2": 1})

        # A broken tls.cfg is refused by the real CLI; the certificate stays.
        with open(self.cfg, "w") as f:
            f.write(BROKEN_TLS_CFG)
        out, err_bytes, status = yield self.ctl_process("tls.reload")
        self.assertEqual(status, 1, (out, err_bytes))
        error = err_bytes.decode()
        self.assertEqual(error.count("\n"), 1, error)
        self.assertIn("tls.cfg:4", error)
        self.assertEqual(service.generation.number, 2)
        fourth = self.client(port)
        yield fourth.wait_for(b"Cipher is ")
        self.assertIn("CN = second.example", subject_seen(fourth))

        # Generation 1 goes when its last connection does.
        self.assertEqual(service.draining, {1})
        released = service.registry.when_generation_released(1)
        second.kill()
        yield released.addTimeout(10, reactor)
        self.assertEqual(service.draining, set())

    @defer.inlineCallbacks
    def test_info_counts_handshakes(self) -> None:
        """tls.info counts good handshakes and failed ones by reason (a TLS 1.1 client)."""
        service = self.start()
        port = self.port_of(service)
        good = self.client(port)
        yield good.wait_for(b"Cipher is ")
        out, err, status = yield run_closing_stdin(
            self.openssl, ["s_client", "-connect", f"127.0.0.1:{port}", "-tls1_1"]
        )
        self.assertNotEqual(status, 0)
        code, info, err_text = yield self.ctl("tls.info")
        self.assertEqual(code, 0, err_text)
        self.assertEqual(info["handshakes_ok"], 1)
        self.assertEqual(info["opened_connections"], 1)
        self.assertEqual(info["clear_text_write_queued_bytes"], 0)
        self.assertEqual(sum(info["handshakes_failed"].values()), 1, info)
        (reason,) = info["handshakes_failed"]
        self.assertIn("unsupported protocol", reason)

    @defer.inlineCallbacks
    def test_sighup_reload_in_twistd(self) -> None:
        """twistd siptls reloads on SIGHUP: a new client sees the new certificate."""
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        if not os.path.exists(twistd):
            twistd = require_tool("twistd")
        port = free_port()
        args = [
            "-n", "--pidfile=", "--logfile=-", "siptls",
            "--listen", f"tls:127.0.0.1:{port}",
            "--config", self.cfg,
            "--control", self.control,
        ]  # fmt: skip
        server = spawn(twistd, args, {"PYTHONPATH": _REPO}, timeout=60, path=self.dir)
        self.addCleanup(self._end, server)
        yield server.wait_for(b"Listening for SIP over TLS", timeout=20)
        self.write_identity("hup.example")
        os.kill(server.pid, 1)
        yield server.wait_for(b"generation 2", timeout=10)
        peer = self.client(port)
        yield peer.wait_for(b"Cipher is ")
        self.assertIn("CN = hup.example", subject_seen(peer))
        os.kill(server.pid, 15)
        yield server.ended.addTimeout(10, reactor)


class _Silent(protocol.Protocol):
    """A TCP client that never sends a ClientHello."""

    def __init__(self) -> None:
        self.lost: defer.Deferred[float] = defer.Deferred()

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(time.monotonic())


class TimeoutEndToEndTests(OpsTestCase):
    @defer.inlineCallbacks
    def test_handshake_timeout(self) -> None:
        """A client that never sends a ClientHello is closed after handshake_timeout (1 s)
        while an established connection keeps working."""
        service = self.start(handshake_timeout="1")
        port = self.port_of(service)
        working = self.client(port)
        yield working.wait_for(b"Cipher is ")
        started = time.monotonic()
        silent = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), _Silent())
        closed_at = yield silent.lost.addTimeout(10, reactor)
        waited = closed_at - started
        self.assertGreaterEqual(waited, 0.9)
        self.assertLess(waited, 3.0)
        working.write(sip_options(n=1))
        yield working.wait_for(b"SIP/2.0 200 OK")
        code, info, _ = yield self.ctl("tls.info")
        self.assertIn("no TLS handshake within 1 s", info["handshakes_failed"])

    @defer.inlineCallbacks
    def test_idle_timeout(self) -> None:
        """An established connection that stays idle is closed after connection_timeout (1 s)."""
        service = self.start(connection_timeout="1")
        port = self.port_of(service)
        idle = self.client(port)
        yield idle.wait_for(b"Cipher is ")
        started = time.monotonic()
        yield idle.ended.addTimeout(10, reactor)
        waited = time.monotonic() - started
        self.assertLess(waited, 4.0)
        self.assertEqual(len(service.registry), 0)
        yield deferLater(0)
