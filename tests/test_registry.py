"""Tests for siptls.registry: the live TLS connection registry."""

from __future__ import annotations

import sys

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from siptls.errors import ControlError, UnknownConnectionError
from siptls.registry import RECORD_FIELDS, ConnectionRecord, ConnectionRegistry

LOCAL = ("192.0.2.1", 5061)


class FakeTransport:
    """Records loseConnection/abortConnection calls; can close synchronously."""

    def __init__(self) -> None:
        self.lost = 0
        self.aborted = 0
        self.on_lose: list[object] = []

    def loseConnection(self) -> None:
        self.lost += 1
        for callback in self.on_lose:
            callback()  # type: ignore[operator]

    def abortConnection(self) -> None:
        self.aborted += 1


def make_registry(max_connections: int = 2048) -> tuple[ConnectionRegistry, Clock]:
    clock = Clock()
    clock.advance(1000.0)
    return ConnectionRegistry(clock, max_connections=max_connections), clock


def remote(n: int) -> tuple[str, int]:
    return (f"198.51.100.{n % 250}", 40000 + n)


class RecordTests(SynchronousTestCase):
    """ConnectionRecord's shape."""

    def test_slots_only(self) -> None:
        """A record has no __dict__, so it cannot grow by accident and stays small."""
        record = ConnectionRecord(1, "in", LOCAL, remote(1), 0.0, 1)
        self.assertFalse(hasattr(record, "__dict__"))
        self.assertLess(sys.getsizeof(record), 300)
        with self.assertRaises(AttributeError):
            record.extra = 1  # type: ignore[attr-defined]

    def test_as_dict_has_every_public_field(self) -> None:
        """as_dict() names every public field and never the private transport."""
        record = ConnectionRecord(7, "out", LOCAL, remote(1), 5.0, 3)
        fields = record.as_dict()
        self.assertEqual(tuple(fields), RECORD_FIELDS)
        self.assertNotIn("_transport", fields)
        self.assertEqual(fields["id"], 7)
        self.assertEqual(fields["state"], "handshaking")


class OpenCloseTests(SynchronousTestCase):
    """Opening and closing connections."""

    def test_open_assigns_increasing_ids(self) -> None:
        """open() numbers connections 1, 2, 3... and stamps them with the clock."""
        registry, clock = make_registry()
        first = registry.open("in", LOCAL, remote(1), FakeTransport(), 1)
        clock.advance(2.5)
        second = registry.open("out", LOCAL, remote(2), FakeTransport(), 1)
        self.assertEqual((first.id, second.id), (1, 2))
        self.assertEqual(first.created, 1000.0)
        self.assertEqual(second.created, 1002.5)
        self.assertEqual(second.last_activity, 1002.5)
        self.assertEqual(first.state, "handshaking")
        self.assertEqual(len(registry), 2)
        self.assertEqual(registry.opened_total, 2)

    def test_ids_not_reused(self) -> None:
        """A closed connection's id is never given to a new one."""
        registry, _ = make_registry()
        first = registry.open("in", LOCAL, remote(1), None, 1)
        registry.close(first)
        second = registry.open("in", LOCAL, remote(1), None, 1)
        self.assertEqual(second.id, 2)

    def test_bad_direction(self) -> None:
        """open() refuses a direction other than 'in' or 'out'."""
        registry, _ = make_registry()
        self.assertRaises(ValueError, registry.open, "sideways", LOCAL, remote(1), None, 1)

    def test_close_idempotent(self) -> None:
        """Closing a record twice forgets it once and drops its transport."""
        registry, _ = make_registry()
        record = registry.open("in", LOCAL, remote(1), FakeTransport(), 1)
        registry.open("in", LOCAL, remote(2), FakeTransport(), 1)
        registry.close(record)
        registry.close(record)
        self.assertEqual(len(registry), 1)
        self.assertNotIn(record.id, registry)
        self.assertIsNone(record._transport)
        self.assertEqual(registry.by_generation(), {1: 1})

    def test_capacity_and_refused(self) -> None:
        """at_capacity() turns true at max_connections; refused() is counted."""
        registry, _ = make_registry(max_connections=2)
        self.assertFalse(registry.at_capacity())
        a = registry.open("in", LOCAL, remote(1), None, 1)
        registry.open("in", LOCAL, remote(2), None, 1)
        self.assertTrue(registry.at_capacity())
        registry.refused()
        registry.close(a)
        self.assertFalse(registry.at_capacity())
        self.assertEqual(registry.info()["refused"], 1)

    def test_no_limit(self) -> None:
        """max_connections <= 0 means no limit."""
        registry, _ = make_registry(max_connections=0)
        for n in range(5):
            registry.open("in", LOCAL, remote(n), None, 1)
        self.assertFalse(registry.at_capacity())

    def test_iteration_is_a_snapshot(self) -> None:
        """Iterating yields records in id order and tolerates closing meanwhile."""
        registry, _ = make_registry()
        records = [registry.open("in", LOCAL, remote(n), None, 1) for n in range(4)]
        seen = []
        for record in registry:
            seen.append(record.id)
            registry.close(record)
        self.assertEqual(seen, [r.id for r in records])
        self.assertEqual(len(registry), 0)


class HandshakeAndCounterTests(SynchronousTestCase):
    """Handshake outcome counters and traffic counters."""

    def test_handshake_done(self) -> None:
        """handshake_done() marks the record established and counts it."""
        registry, clock = make_registry()
        record = registry.open("in", LOCAL, remote(1), None, 1)
        clock.advance(1)
        registry.handshake_done(record)
        self.assertEqual(record.state, "established")
        self.assertEqual(record.last_activity, 1001.0)
        self.assertEqual(registry.info()["handshakes_ok"], 1)

    def test_handshake_failed_by_reason(self) -> None:
        """handshake_failed() counts failures per reason."""
        registry, _ = make_registry()
        for reason in ["no shared cipher", "certificate verify failed", "no shared cipher"]:
            registry.handshake_failed(registry.open("in", LOCAL, remote(1), None, 1), reason)
        self.assertEqual(
            registry.info()["handshakes_failed"],
            {"no shared cipher": 2, "certificate verify failed": 1},
        )

    def test_failure_reasons_bounded(self) -> None:
        """Past 64 distinct reasons, new reasons are counted under 'other'."""
        registry, _ = make_registry()
        record = registry.open("in", LOCAL, remote(1), None, 1)
        for n in range(100):
            registry.handshake_failed(record, f"reason {n}")
        failed = registry.info()["handshakes_failed"]
        self.assertLessEqual(len(failed), 65)
        self.assertEqual(sum(failed.values()), 100)
        self.assertEqual(failed["other"], 36)

    def test_info(self) -> None:
        """info() reports limits, live and total counts and the clear-text queue total."""
        registry, _ = make_registry(max_connections=10)
        a = registry.open("in", LOCAL, remote(1), None, 1)
        b = registry.open("in", LOCAL, remote(2), None, 1)
        c = registry.open("in", LOCAL, remote(3), None, 1)
        # The protocol keeps the per-connection and the shared totals.
        a.queued_cleartext = 100
        b.queued_cleartext = 23
        registry.queue_account.queued = 123
        registry.close(c)
        self.assertEqual(
            registry.info(),
            {
                "max_connections": 10,
                "opened_connections": 2,
                "clear_text_write_queued_bytes": 123,
                "handshakes_ok": 0,
                "handshakes_failed": {},
                "refused": 0,
                "opened_total": 3,
            },
        )


class GetAndKillTests(SynchronousTestCase):
    """Looking up and killing connections."""

    def test_get_unknown(self) -> None:
        """get() of an unknown id raises a ControlError naming the id."""
        registry, _ = make_registry()
        error = self.assertRaises(UnknownConnectionError, registry.get, 42)
        self.assertIsInstance(error, ControlError)
        self.assertEqual(str(error), "no TLS connection with id 42")
        self.assertEqual(error.connection_id, 42)

    def test_kill_loses_then_aborts(self) -> None:
        """kill() calls loseConnection() now and abortConnection() after the grace period."""
        registry, clock = make_registry()
        transport = FakeTransport()
        record = registry.open("in", LOCAL, remote(1), transport, 1)
        self.assertIs(registry.kill(record.id), record)
        self.assertEqual((transport.lost, transport.aborted), (1, 0))
        self.assertEqual(record.state, "closing")
        clock.advance(registry.kill_grace)
        self.assertEqual(transport.aborted, 1)

    def test_kill_closed_in_time(self) -> None:
        """A killed connection that closes within the grace period is not aborted."""
        registry, clock = make_registry()
        transport = FakeTransport()
        record = registry.open("in", LOCAL, remote(1), transport, 1)
        registry.kill(record.id)
        registry.close(record)
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(10)
        self.assertEqual(transport.aborted, 0)

    def test_kill_synchronous_close(self) -> None:
        """If loseConnection() closes the record at once, no abort timer is left."""
        registry, clock = make_registry()
        transport = FakeTransport()
        record = registry.open("in", LOCAL, remote(1), transport, 1)
        transport.on_lose.append(lambda: registry.close(record))
        registry.kill(record.id)
        self.assertEqual(len(registry), 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_kill_twice_aborts(self) -> None:
        """Killing a connection that is already being killed aborts it at once."""
        registry, clock = make_registry()
        transport = FakeTransport()
        record = registry.open("in", LOCAL, remote(1), transport, 1)
        registry.kill(record.id)
        registry.kill(record.id)
        self.assertEqual((transport.lost, transport.aborted), (1, 1))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_kill_unknown(self) -> None:
        """kill() of an unknown id raises UnknownConnectionError."""
        registry, _ = make_registry()
        self.assertRaises(UnknownConnectionError, registry.kill, 9)

    def test_kill_without_transport(self) -> None:
        """A record without a transport is simply forgotten by kill()."""
        registry, _ = make_registry()
        record = registry.open("in", LOCAL, remote(1), None, 1)
        registry.kill(record.id)
        self.assertEqual(len(registry), 0)


class QueryTests(SynchronousTestCase):
    """Paging and filtering with query()."""

    def setUp(self) -> None:
        self.registry, _ = make_registry()
        self.records = []
        for n in range(10):
            record = self.registry.open("in", LOCAL, remote(n), None, 1)
            record.domain = "TLSs<default>" if n % 2 else "TLSs<192.0.2.1:5061>"
            record.sni = "Sip.Example.COM" if n < 3 else None
            self.records.append(record)
        v6 = self.registry.open("out", ("::1", 5061), ("2001:db8::5", 5061), None, 1)
        self.records.append(v6)

    def ids(self, records: list[ConnectionRecord]) -> list[int]:
        return [r.id for r in records]

    def test_unfiltered_pages(self) -> None:
        """Pages come in id order; the total counts every record."""
        page, total = self.registry.query(offset=0, limit=4)
        self.assertEqual((self.ids(page), total), ([1, 2, 3, 4], 11))
        page, total = self.registry.query(offset=8, limit=4)
        self.assertEqual((self.ids(page), total), ([9, 10, 11], 11))
        page, total = self.registry.query(offset=20, limit=4)
        self.assertEqual((page, total), ([], 11))

    def test_after_cursor(self) -> None:
        """after= keeps ids greater than the cursor, even when earlier ones closed."""
        self.registry.close(self.records[1])
        page, total = self.registry.query(limit=3, after=1)
        self.assertEqual((self.ids(page), total), ([3, 4, 5], 9))
        page, total = self.registry.query(limit=3, after=2)
        self.assertEqual(self.ids(page), [3, 4, 5])

    def test_filter_peer(self) -> None:
        """peer= matches the remote host, host:port or [v6]:port."""
        page, total = self.registry.query(peer="198.51.100.3")
        self.assertEqual((self.ids(page), total), ([4], 1))
        page, _ = self.registry.query(peer="198.51.100.3:40003")
        self.assertEqual(self.ids(page), [4])
        page, _ = self.registry.query(peer="198.51.100.3:1")
        self.assertEqual(page, [])
        page, _ = self.registry.query(peer="[2001:db8::5]:5061")
        self.assertEqual(self.ids(page), [11])

    def test_filter_domain_and_sni(self) -> None:
        """domain= matches exactly; sni= ignores case; filters combine; paging applies after."""
        page, total = self.registry.query(domain="TLSs<default>")
        self.assertEqual((self.ids(page), total), ([2, 4, 6, 8, 10], 5))
        page, total = self.registry.query(domain="TLSs<default>", offset=1, limit=2)
        self.assertEqual((self.ids(page), total), ([4, 6], 5))
        page, total = self.registry.query(sni="sip.example.com")
        self.assertEqual((self.ids(page), total), ([1, 2, 3], 3))
        page, total = self.registry.query(sni="sip.example.com", domain="TLSs<default>")
        self.assertEqual((self.ids(page), total), ([2], 1))

    def test_negative(self) -> None:
        """A negative offset or limit is a ControlError."""
        self.assertRaises(ControlError, self.registry.query, offset=-1)
        self.assertRaises(ControlError, self.registry.query, limit=-5)


class GenerationTests(SynchronousTestCase):
    """Tracking configuration generations for reload."""

    def test_by_generation(self) -> None:
        """by_generation() counts live connections per generation."""
        registry, _ = make_registry()
        a = registry.open("in", LOCAL, remote(1), None, 1)
        registry.open("in", LOCAL, remote(2), None, 1)
        registry.open("in", LOCAL, remote(3), None, 2)
        self.assertEqual(registry.by_generation(), {1: 2, 2: 1})
        registry.close(a)
        self.assertEqual(registry.by_generation(), {1: 1, 2: 1})

    def test_released_when_last_closes(self) -> None:
        """when_generation_released() fires when the generation's last connection closes."""
        registry, _ = make_registry()
        a = registry.open("in", LOCAL, remote(1), None, 1)
        b = registry.open("in", LOCAL, remote(2), None, 1)
        registry.open("in", LOCAL, remote(3), None, 2)
        released = registry.when_generation_released(1)
        registry.close(a)
        self.assertNoResult(released)
        registry.close(b)
        self.assertIsNone(self.successResultOf(released))

    def test_released_at_once_when_unused(self) -> None:
        """A generation without connections is reported released at once."""
        registry, _ = make_registry()
        self.assertIsNone(self.successResultOf(registry.when_generation_released(5)))

    def test_release_observer(self) -> None:
        """Observers hear of every generation whose last connection closes."""
        registry, _ = make_registry()
        heard: list[int] = []
        registry.add_release_observer(heard.append)
        registry.add_release_observer(lambda g: 1 / 0)  # a failing observer is logged only
        a = registry.open("in", LOCAL, remote(1), None, 1)
        b = registry.open("in", LOCAL, remote(2), None, 2)
        registry.close(b)
        registry.close(a)
        self.assertEqual(heard, [2, 1])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)
