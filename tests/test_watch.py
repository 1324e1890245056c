"""Certificate watching, close_notify and the shared clear-text queue, in memory."""

from __future__ import annotations

import os

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.trial.unittest import SynchronousTestCase

from siptls.protocol import SIPTLSFactory
from siptls.watch import FileWatcher, watched_files
from tests.certs import make_ca, make_leaf
from tests.test_reload import OPTIONS, Logged, ServiceLoop, peer_common_name, write_identity


class WatcherTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.ca = make_ca("siptls watch CA")
        write_identity(self.dir, self.ca, "first.example")
        self.cfg = os.path.join(self.dir, "tls.cfg")
        self.write_cfg("server.pem", "server.key")
        self.loop = ServiceLoop(
            self.dir, {"config": self.cfg, "watch_certificates": "1", "watch_interval": "2"}
        )
        self.service = self.loop.service
        self.service.watcher.start()
        self.addCleanup(self.service.watcher.stop)

    def write_cfg(self, certificate: str, key: str) -> None:
        with open(self.cfg, "w") as f:
            f.write(f"[server:default]\ncertificate = {certificate}\nprivate_key = {key}\n")

    def touch(self, path: str, data: bytes | None = None) -> None:
        """Rewrite ``path`` and move its mtime forward so every filesystem sees a change."""
        if data is not None:
            with open(path, "wb") as f:
                f.write(data)
        info = os.stat(path)
        os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))

    def test_watched_files(self) -> None:
        """The watcher looks at tls.cfg and the certificate and key it names."""
        files = watched_files(self.service.config)
        self.assertIn(self.cfg, files)
        self.assertIn(os.path.join(self.dir, "server.pem"), files)
        self.assertIn(os.path.join(self.dir, "server.key"), files)
        self.assertEqual(self.service.watcher.interval, 2.0)

    def test_certificate_change_reloads(self) -> None:
        """A rewritten certificate and key are picked up at the next poll."""
        self.loop.clock.advance(2)
        self.assertEqual(self.service.generation.number, 1)
        write_identity(self.dir, self.ca, "second.example")
        self.touch(os.path.join(self.dir, "server.pem"))
        self.loop.clock.advance(2)
        self.assertEqual(self.service.generation.number, 2)
        _, tls, _, _ = self.loop.connect()
        self.assertIn("CN=second.example", peer_common_name(tls))

    def test_failed_reload_logged_once_per_change(self) -> None:
        """A broken change is refused once, not at every poll, and the next change retries."""
        logged = Logged(self)
        leaf = make_leaf(self.ca, common_name="mismatch.example", dns=["mismatch.example"])
        self.touch(os.path.join(self.dir, "server.pem"), leaf.chain_pem())
        for _ in range(5):
            self.loop.clock.advance(2)
        refusals = [line for line in logged.lines if "Reload refused" in line]
        self.assertEqual(len(refusals), 1, refusals)
        self.assertEqual(self.service.generation.number, 1)
        self.assertEqual(self.service.watcher.failures, 1)
        # Now the matching key arrives: the next poll reloads.
        self.touch(os.path.join(self.dir, "server.key"), leaf.key_pem())
        self.loop.clock.advance(2)
        self.assertEqual(self.service.generation.number, 2)

    def test_new_files_watched_after_reload(self) -> None:
        """After tls.cfg names other files, changes to those files reload."""
        leaf = make_leaf(self.ca, common_name="other.example", dns=["other.example"])
        leaf.write(self.dir, "other")
        self.write_cfg("other.pem", "other.key")
        self.touch(self.cfg)
        self.loop.clock.advance(2)
        self.assertEqual(self.service.generation.number, 2)
        self.assertIn(os.path.join(self.dir, "other.pem"), watched_files(self.service.config))
        write_identity(self.dir, self.ca, "again.example")
        os.replace(os.path.join(self.dir, "server.pem"), os.path.join(self.dir, "other.pem"))
        os.replace(os.path.join(self.dir, "server.key"), os.path.join(self.dir, "other.key"))
        self.loop.clock.advance(2)
        self.assertEqual(self.service.generation.number, 3)

    def test_watcher_alone(self) -> None:
        """FileWatcher calls back with the changed paths, and a missing file counts as a change."""
        path = os.path.join(self.dir, "a.pem")
        with open(path, "w") as f:
            f.write("x")
        seen: list[list[str]] = []
        watcher = FileWatcher(lambda: [path], seen.append, self.loop.clock, 1.0)
        watcher.start()
        self.addCleanup(watcher.stop)
        self.loop.clock.advance(1)
        self.assertEqual(seen, [])
        os.unlink(path)
        self.loop.clock.advance(1)
        self.loop.clock.advance(1)
        self.assertEqual(seen, [[path]])


def serve(test: SynchronousTestCase, send_close_notify: str = "0") -> ServiceLoop:
    """A service on a Clock with a fresh certificate and ``send_close_notify``."""
    directory = os.path.abspath(test.mktemp())
    os.makedirs(directory)
    write_identity(directory, make_ca("close CA"), "close.example")
    return ServiceLoop(
        directory,
        {
            "certificate": os.path.join(directory, "server.pem"),
            "private_key": os.path.join(directory, "server.key"),
            "send_close_notify": send_close_notify,
        },
    )


class CloseNotifyTests(SynchronousTestCase):
    def kill_after_reply(self, loop: ServiceLoop) -> tuple[object, bytes]:
        """Send OPTIONS, kill the connection at once; what the client saw."""
        client, client_tls, server_tls, pump = loop.connect()
        client_tls.write(OPTIONS)
        pump.flush()
        self.assertEqual(client.received.count(b"SIP/2.0 200 OK"), 1)
        # An answer written in the same turn as the close must still arrive.
        protocol = server_tls.wrappedProtocol
        protocol.send(b"\r\n")
        loop.service.registry.kill(protocol.record.id)
        for _ in range(3):
            loop.clock.advance(0)
            pump.flush()
        return client.lost, client.received

    def test_close_notify_off(self) -> None:
        """send_close_notify=0 (the default): pending output is flushed, then TCP closes
        without a close_notify, which the client reports as ConnectionLost."""
        lost, received = self.kill_after_reply(serve(self, "0"))
        self.assertTrue(received.endswith(b"\r\n\r\n\r\n"), received[-20:])
        self.assertIsNotNone(lost)
        self.assertIsInstance(lost.value, ConnectionLost)  # type: ignore[attr-defined]

    def test_close_notify_on(self) -> None:
        """send_close_notify=1: the client gets a close_notify: a clean ConnectionDone."""
        lost, received = self.kill_after_reply(serve(self, "1"))
        self.assertTrue(received.endswith(b"\r\n\r\n\r\n"), received[-20:])
        self.assertIsNotNone(lost)
        self.assertIsInstance(lost.value, ConnectionDone)  # type: ignore[attr-defined]
        self.assertNotIsInstance(lost.value, ConnectionLost)  # type: ignore[attr-defined]


class QueueAccountTests(SynchronousTestCase):
    def test_shared_account(self) -> None:
        """Every factory on one registry shares its queue account, which tls.info reports."""
        loop = serve(self)
        service = loop.service
        outgoing = SIPTLSFactory(
            service.application, service.registry, loop.clock, service.limits, "out"
        )
        self.assertIs(outgoing.queue_account, service.factory.queue_account)
        self.assertIs(service.factory.queue_account, service.registry.queue_account)
        service.registry.queue_account.queued = 42
        self.assertEqual(service.registry.info()["clear_text_write_queued_bytes"], 42)
