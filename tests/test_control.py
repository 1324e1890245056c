"""Tests for siptls.control: AMP commands, the locator, the control socket and siptls-ctl."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from io import StringIO
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.test.iosim import IOPump, connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from siptls.control import cli
from siptls.control.cli import ClosableAMP
from siptls.control.commands import (
    CONNECTION_ENTRY,
    DOMAIN_ENTRY,
    MAX_LIST_LIMIT,
    PAGE_BYTES,
    TEXT_LIMIT,
    TLSInfo,
    TLSKill,
    TLSList,
    TLSOptions,
    TLSReload,
    fit_page,
)
from siptls.control.locator import ControlLocator
from siptls.control.server import ControlService, default_control_path
from siptls.errors import ConfigError, ControlError, ControlSocketError, UnknownConnectionError
from siptls.interfaces import IControlTarget
from siptls.registry import RECORD_FIELDS, ConnectionRegistry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL = ("192.0.2.1", 5061)


class FakeTransport:
    """Counts loseConnection/abortConnection calls."""

    def __init__(self) -> None:
        self.lost = 0
        self.aborted = 0

    def loseConnection(self) -> None:
        self.lost += 1

    def abortConnection(self) -> None:
        self.aborted += 1


@implementer(IControlTarget)
class FakeTarget:
    """A server stand-in: fixed generation and uptime, scripted options and reload."""

    def __init__(self) -> None:
        self.current = 1
        self.globals: list[tuple[str, object]] = [
            ("method", "TLSv1.2+"),
            ("verify_depth", 9),
            ("config", None),
        ]
        self.domains: list[tuple[str, list[tuple[str, object]]]] = [
            (
                "TLSs<default>",
                [
                    ("certificate", "/etc/siptls/cert.pem"),
                    ("method", "TLSv1.2+"),
                    ("verify_mode", "none"),
                    ("server_name", None),
                    ("certificate_subject", "CN=sip.example.com"),
                    ("certificate_not_after", "2030-01-01T00:00:00Z"),
                ],
            ),
            ("TLSc<default>", [("method", "TLSv1.3"), ("verify_mode", "peer")]),
        ]
        self.reload_result: Any = 2

    def generation(self) -> int:
        return self.current

    def uptime(self) -> float:
        return 12.5

    def options(self) -> tuple[list[tuple[str, object]], list[tuple[str, Any]]]:
        return self.globals, self.domains

    def reload(self) -> object:
        if isinstance(self.reload_result, Exception):
            raise self.reload_result
        return self.reload_result


def fill(registry: ConnectionRegistry, count: int, generation: int = 1) -> None:
    """Open ``count`` established connections with every TLS fact set."""
    for n in range(count):
        record = registry.open(
            "in", LOCAL, (f"198.51.100.{n % 250}", 40000 + n % 20000), None, generation
        )
        record.domain = "TLSs<default>"
        record.domain_reason = "default"
        record.sni = f"peer{n % 7}.example.com"
        record.tls_version = "TLSv1.3"
        record.cipher = "TLS_AES_256_GCM_SHA384"
        record.cipher_bits = 256
        record.peer_subject = f"CN=peer{n}.example.com,O=Example Peers"
        record.peer_issuer = "CN=Example CA,O=Example"
        record.peer_serial = f"{n:032X}"
        record.peer_not_after = "2030-01-01T00:00:00Z"
        record.verification = "ok"
        record.state = "established"


class InMemory:
    """A ControlLocator on a registry and FakeTarget, reached over in-memory AMP."""

    def __init__(self, registry: ConnectionRegistry | None = None) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.registry = registry or ConnectionRegistry(self.clock, max_connections=100)
        self.target = FakeTarget()
        self.pages = 0
        outer = self

        class CountingAMP(amp.AMP):
            def callRemote(self, commandType: Any, *a: Any, **kw: Any) -> Any:
                outer.pages += commandType is TLSList
                return super().callRemote(commandType, *a, **kw)

        client, _server, pump = connectedServerAndClient(
            lambda: amp.AMP(locator=ControlLocator(self.registry, self.target)), CountingAMP
        )
        self.client: amp.AMP = client
        self.pump: IOPump = pump

    def settle(self, d: Deferred[Any]) -> None:
        # IOPump.flush() gives up after 1000 rounds; paging may need more.
        while not d.called and self.pump.pump():
            pass

    def call(self, test: SynchronousTestCase, command: type[amp.Command], **kw: Any) -> Any:
        results: list[Any] = []
        d = self.client.callRemote(command, **kw).addBoth(results.append)
        self.settle(d)
        test.assertEqual(len(results), 1, f"{command.__name__} got no answer")
        if isinstance(results[0], Failure):
            test.fail(f"{command.__name__} failed: {results[0].getErrorMessage()}")
        return results[0]

    def call_fails(
        self,
        test: SynchronousTestCase,
        error: type[Exception],
        command: type[amp.Command],
        **kw: Any,
    ) -> Exception:
        # The errback must be attached before the answer arrives: AMP hands an
        # error nobody handles yet to unhandledError and drops the connection.
        failures: list[Failure] = []
        d = self.client.callRemote(command, **kw).addErrback(failures.append)
        self.settle(d)
        test.assertEqual(len(failures), 1, f"{command.__name__} did not fail")
        test.assertTrue(failures[0].check(error), failures[0])
        return failures[0].value

    def cli(self, test: SynchronousTestCase, *argv: str) -> tuple[int, str, str]:
        args = cli.parse_args(["--control", "/unused", *argv])
        out, err = StringIO(), StringIO()
        d = ensureDeferred(cli.execute(self.client, args, out, err))
        self.settle(d)
        return test.successResultOf(d), out.getvalue(), err.getvalue()


class CommandTests(SynchronousTestCase):
    """Every command over in-memory AMP, with its errors."""

    def setUp(self) -> None:
        self.io = InMemory()
        self.registry = self.io.registry

    def test_fake_target_provides_interface(self) -> None:
        """The fake target really provides IControlTarget."""
        self.assertTrue(verifyObject(IControlTarget, self.io.target))

    def test_info(self) -> None:
        """tls.info reports Kamailio's three fields plus our counters and generations."""
        fill(self.registry, 3)
        fill(self.registry, 1, generation=2)
        self.registry.refused()
        first = next(iter(self.registry))
        first.queued_cleartext = 77
        self.registry.queue_account.queued = 77
        self.registry.handshake_done(first)
        self.registry.handshake_failed(first, "no shared cipher")
        self.io.target.current = 2
        answer = self.io.call(self, TLSInfo)
        self.assertEqual(answer["max_connections"], 100)
        self.assertEqual(answer["opened_connections"], 4)
        self.assertEqual(answer["clear_text_write_queued_bytes"], 77)
        self.assertEqual(answer["uptime"], 12.5)
        self.assertEqual(answer["generation"], 2)
        self.assertEqual(answer["handshakes_ok"], 1)
        self.assertEqual(answer["handshakes_failed"], [{"reason": "no shared cipher", "count": 1}])
        self.assertEqual(answer["refused"], 1)
        self.assertEqual(answer["opened_total"], 4)
        self.assertEqual(
            answer["generations"],
            [{"generation": 1, "connections": 3}, {"generation": 2, "connections": 1}],
        )

    def test_list_every_field(self) -> None:
        """tls.list carries every record field; unset ones arrive as None."""
        fill(self.registry, 1)
        bare = self.registry.open("out", ("::1", 5061), ("2001:db8::7", 5062), None, 3)
        answer = self.io.call(self, TLSList)
        full, empty = answer["connections"]
        record = next(iter(self.registry))
        for name in RECORD_FIELDS:
            if name == "local":
                self.assertEqual((full["local_host"], full["local_port"]), record.local)
            elif name == "remote":
                self.assertEqual((full["remote_host"], full["remote_port"]), record.remote)
            else:
                self.assertEqual(full[name], getattr(record, name), name)
        self.assertEqual((empty["remote_host"], empty["remote_port"]), bare.remote)
        self.assertIsNone(empty["sni"])
        self.assertIsNone(empty["cipher_bits"])
        self.assertEqual(empty["state"], "handshaking")
        self.assertEqual((answer["total"], answer["more"]), (2, False))
        self.assertIsNone(answer["next_offset"])
        self.assertEqual(answer["last_id"], 2)

    def test_list_paging_and_filters(self) -> None:
        """tls.list honours offset, limit, after and the filters, and says where to go on."""
        fill(self.registry, 10)
        answer = self.io.call(self, TLSList, offset=2, limit=3)
        self.assertEqual([e["id"] for e in answer["connections"]], [3, 4, 5])
        self.assertEqual((answer["total"], answer["more"], answer["next_offset"]), (10, True, 5))
        self.assertEqual(answer["last_id"], 5)
        answer = self.io.call(self, TLSList, after=8, limit=3)
        self.assertEqual([e["id"] for e in answer["connections"]], [9, 10])
        self.assertFalse(answer["more"])
        answer = self.io.call(self, TLSList, sni="PEER1.example.com")
        self.assertEqual([e["id"] for e in answer["connections"]], [2, 9])
        answer = self.io.call(self, TLSList, peer="198.51.100.4:40004", domain="TLSs<default>")
        self.assertEqual([e["id"] for e in answer["connections"]], [5])

    def test_list_limits(self) -> None:
        """Without a limit a page holds 100; a larger limit is cut to MAX_LIST_LIMIT or bytes."""
        for n in range(150):
            self.registry.open("in", LOCAL, ("198.51.100.1", 40000 + n), None, 1)
        answer = self.io.call(self, TLSList)
        self.assertEqual(len(answer["connections"]), 100)
        answer = self.io.call(self, TLSList, limit=MAX_LIST_LIMIT * 10)
        self.assertLessEqual(len(answer["connections"]), MAX_LIST_LIMIT)

    def test_list_page_within_amp_limit(self) -> None:
        """A page is capped by its encoded size, below AMP's 65,535-byte value limit."""
        registry = ConnectionRegistry(Clock(), max_connections=0)
        fill(registry, 3000)
        io = InMemory(registry)
        answer = io.call(self, TLSList, limit=MAX_LIST_LIMIT)
        page = answer["connections"]
        self.assertLess(len(page), MAX_LIST_LIMIT)
        self.assertTrue(answer["more"])
        self.assertEqual(answer["next_offset"], len(page))
        encoded = CONNECTION_ENTRY.toStringProto(page, None)
        self.assertLessEqual(len(encoded), PAGE_BYTES)
        # Nearly full: one more entry would not have fitted.
        self.assertGreater(len(encoded), PAGE_BYTES - 1000)

    def test_list_clips_huge_fields(self) -> None:
        """A field longer than TEXT_LIMIT is cut (marked with an ellipsis) so the entry fits."""
        fill(self.registry, 1)
        record = next(iter(self.registry))
        record.peer_subject = "CN=" + "x" * 200_000
        record.peer_issuer = "O=" + "y" * 200_000
        entry = self.io.call(self, TLSList)["connections"][0]
        self.assertEqual(len(entry["peer_subject"]), TEXT_LIMIT)
        self.assertTrue(entry["peer_subject"].endswith("\u2026"))

    def test_list_negative_offset(self) -> None:
        """A negative offset comes back as a ControlError."""
        error = self.io.call_fails(self, ControlError, TLSList, offset=-1)
        self.assertIn("must not be negative", str(error))

    def test_fit_page(self) -> None:
        """fit_page counts the leading entries whose encoding fits the budget."""
        entries = [{"domain": "d" * 90, "settings": []} for _ in range(10)]
        size = len(DOMAIN_ENTRY.toStringProto(entries[:1], None))
        self.assertEqual(len(fit_page(DOMAIN_ENTRY, entries, size * 3)), 3)
        self.assertEqual(len(fit_page(DOMAIN_ENTRY, entries, size * 3 - 1)), 2)
        self.assertEqual(len(fit_page(DOMAIN_ENTRY, entries, 10**6)), 10)
        self.assertEqual(fit_page(DOMAIN_ENTRY, [], 0), [])
        encoded = fit_page(DOMAIN_ENTRY, entries[:2], 10**6)
        self.assertEqual(b"".join(encoded), DOMAIN_ENTRY.toStringProto(entries[:2], None))
        self.assertEqual(DOMAIN_ENTRY.fromStringProto(b"".join(encoded), None), entries[:2])

    def test_options(self) -> None:
        """tls.options sends globals and per-domain settings as text name/value pairs."""
        answer = self.io.call(self, TLSOptions)
        self.assertEqual(
            answer["globals"],
            [
                {"name": "method", "value": "TLSv1.2+"},
                {"name": "verify_depth", "value": "9"},
                {"name": "config", "value": ""},
            ],
        )
        self.assertEqual(
            [d["domain"] for d in answer["domains"]], ["TLSs<default>", "TLSc<default>"]
        )
        settings = {p["name"]: p["value"] for p in answer["domains"][0]["settings"]}
        self.assertEqual(settings["certificate_subject"], "CN=sip.example.com")
        self.assertEqual(settings["server_name"], "")
        self.assertEqual(answer["domain_total"], 2)
        self.assertIsNone(answer["next_domain_offset"])

    def test_options_paging(self) -> None:
        """Many domains come in pages that each fit AMP's limit, and all arrive."""
        self.io.target.domains = [
            (f"TLSs<10.0.{n // 250}.{n % 250}:5061>", [(f"key{k}", "v" * 100) for k in range(20)])
            for n in range(300)
        ]
        seen: list[str] = []
        offset: int | None = 0
        pages = 0
        while offset is not None:
            answer = self.io.call(self, TLSOptions, domain_offset=offset)
            self.assertLessEqual(
                len(DOMAIN_ENTRY.toStringProto(answer["domains"], None)), PAGE_BYTES
            )
            seen += [d["domain"] for d in answer["domains"]]
            offset = answer["next_domain_offset"]
            pages += 1
        self.assertGreater(pages, 1)
        self.assertEqual(seen, [name for name, _ in self.io.target.domains])

    def test_kill(self) -> None:
        """tls.kill closes the connection and names it in the reply."""
        transport = FakeTransport()
        record = self.registry.open("in", LOCAL, ("198.51.100.9", 41000), transport, 1)
        record.domain = "TLSs<default>"
        answer = self.io.call(self, TLSKill, id=record.id)
        self.assertEqual(
            answer,
            {
                "id": 1,
                "remote_host": "198.51.100.9",
                "remote_port": 41000,
                "domain": "TLSs<default>",
            },
        )
        self.assertEqual(transport.lost, 1)

    def test_kill_unknown(self) -> None:
        """tls.kill of an unknown id comes back as UnknownConnectionError with the message."""
        error = self.io.call_fails(self, UnknownConnectionError, TLSKill, id=42)
        self.assertEqual(str(error), "no TLS connection with id 42")

    def test_reload(self) -> None:
        """tls.reload returns the generation the target reports, plain or deferred."""
        self.assertEqual(self.io.call(self, TLSReload), {"generation": 2})
        self.io.target.reload_result = succeed(3)
        self.assertEqual(self.io.call(self, TLSReload), {"generation": 3})

    def test_reload_refused(self) -> None:
        """A refused reload comes back as ConfigError with the exact config error message."""
        problem = ConfigError(
            "unknown method 'TLSv9' (expected one of TLSv1.2+, TLSv1.3).",
            source="tls.cfg",
            line=12,
            section="server:default",
        )
        self.io.target.reload_result = problem
        error = self.io.call_fails(self, ConfigError, TLSReload)
        self.assertEqual(str(error), str(problem))
        self.io.target.reload_result = fail(problem)
        error = self.io.call_fails(self, ConfigError, TLSReload)
        self.assertEqual(
            str(error),
            "tls.cfg:12: [server:default] unknown method 'TLSv9' "
            "(expected one of TLSv1.2+, TLSv1.3).",
        )

    def test_reload_control_error(self) -> None:
        """A ControlError from reload (no config file) comes back as ControlError."""
        self.io.target.reload_result = ControlError("No TLS configuration file configured.")
        error = self.io.call_fails(self, ControlError, TLSReload)
        self.assertEqual(str(error), "No TLS configuration file configured.")

    def test_reload_long_message_clipped(self) -> None:
        """A huge config error message is cut so the error still fits one AMP value."""
        self.io.target.reload_result = ConfigError("bad " * 50_000)
        error = self.io.call_fails(self, ConfigError, TLSReload)
        self.assertLessEqual(len(str(error)), 4_000)

    def test_reload_unexpected_error(self) -> None:
        """An undeclared exception reaches the client as UnknownRemoteError and is logged."""
        self.io.target.reload_result = RuntimeError("boom")
        self.io.call_fails(self, amp.UnknownRemoteError, TLSReload)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class CLITests(SynchronousTestCase):
    """siptls-ctl's output and exit status, driven in memory through cli.execute."""

    def setUp(self) -> None:
        self.io = InMemory()
        self.registry = self.io.registry

    def test_info_table(self) -> None:
        """tls.info prints aligned name/value lines, including failures by reason."""
        fill(self.registry, 2)
        self.registry.handshake_failed(next(iter(self.registry)), "certificate verify failed")
        code, out, err = self.io.cli(self, "tls.info")
        self.assertEqual((code, err), (0, ""))
        lines = out.splitlines()
        self.assertIn("opened_connections             2", lines)
        self.assertIn("uptime                         12.5 s", lines)
        self.assertIn("  certificate verify failed    1", lines)
        self.assertIn("connections[generation 1]      2", lines)
        # Every value starts in the same column.
        self.assertEqual({len(line) - len(line.rsplit("  ", 1)[1]) for line in lines}, {31})

    def test_info_json(self) -> None:
        """tls.info --json prints every field as JSON."""
        fill(self.registry, 2)
        code, out, _ = self.io.cli(self, "--json", "tls.info")
        data = json.loads(out)
        self.assertEqual(code, 0)
        self.assertEqual(data["opened_connections"], 2)
        self.assertEqual(data["max_connections"], 100)
        self.assertEqual(data["clear_text_write_queued_bytes"], 0)
        self.assertEqual(data["handshakes_failed"], {})
        self.assertEqual(data["generations"], {"1": 2})

    def test_list_table(self) -> None:
        """tls.list prints a header, one aligned row per connection and a count."""
        fill(self.registry, 2)
        self.registry.open("out", ("::1", 5061), ("2001:db8::7", 5062), None, 1)
        code, out, err = self.io.cli(self, "tls.list")
        self.assertEqual((code, err), (0, ""))
        lines = out.splitlines()
        self.assertTrue(lines[0].startswith("ID  DIR  STATE"))
        self.assertEqual(len(lines), 5)
        self.assertEqual(lines[-1], "3 connections")
        self.assertIn("198.51.100.1:40001", lines[2])
        self.assertIn("TLS_AES_256_GCM_SHA384", lines[2])
        self.assertIn("[2001:db8::7]:5062", lines[3])
        self.assertEqual(lines[1].index("TLSs<default>"), lines[0].index("DOMAIN"))

    def test_list_json_and_filters(self) -> None:
        """tls.list --json gives every field; --peer/--sni/--domain filter on the server."""
        fill(self.registry, 10)
        code, out, _ = self.io.cli(self, "--json", "tls.list", "--sni", "peer3.example.com")
        data = json.loads(out)
        self.assertEqual(code, 0)
        self.assertEqual(data["total"], 1)
        self.assertEqual([e["id"] for e in data["connections"]], [4])
        self.assertEqual(
            set(data["connections"][0]) - {"local_host", "local_port"},
            set(RECORD_FIELDS) - {"local", "remote"} | {"remote_host", "remote_port"},
        )
        code, out, _ = self.io.cli(self, "--json", "tls.list", "--peer", "198.51.100.5")
        self.assertEqual([e["id"] for e in json.loads(out)["connections"]], [6])
        code, out, _ = self.io.cli(self, "--json", "tls.list", "--domain", "TLSs<other>")
        self.assertEqual(json.loads(out), {"total": 0, "connections": []})

    def test_list_limit(self) -> None:
        """--limit N shows at most N connections and says how many there were."""
        fill(self.registry, 10)
        code, out, _ = self.io.cli(self, "tls.list", "--limit", "3", "--page-size", "2")
        self.assertEqual(code, 0)
        self.assertEqual(len(out.splitlines()), 5)
        self.assertEqual(out.splitlines()[-1], "3 of 10 connections shown")

    def test_list_50000(self) -> None:
        """siptls-ctl pages through 50,000 connections, every page within AMP's limit."""
        registry = ConnectionRegistry(Clock(), max_connections=0)
        fill(registry, 50_000)
        io = InMemory(registry)
        code, out, err = io.cli(self, "--json", "tls.list")
        self.assertEqual((code, err), (0, ""))
        data = json.loads(out)
        self.assertEqual(data["total"], 50_000)
        self.assertEqual([e["id"] for e in data["connections"]], list(range(1, 50_001)))
        # More pages than 50,000 / page-size: the byte budget, not the count, cut them.
        self.assertGreater(io.pages, 50_000 // cli.DEFAULT_PAGE_SIZE)

    def test_options_table_and_json(self) -> None:
        """tls.options prints globals then each domain's settings; --json gives mappings."""
        code, out, _ = self.io.cli(self, "tls.options")
        self.assertEqual(code, 0)
        self.assertIn("Global parameters:\n  method        TLSv1.2+\n  verify_depth  9\n", out)
        self.assertIn("\nDomain TLSc<default>:\n  method       TLSv1.3\n  verify_mode  peer\n", out)
        code, out, _ = self.io.cli(self, "--json", "tls.options")
        data = json.loads(out)
        self.assertEqual(data["globals"], {"method": "TLSv1.2+", "verify_depth": "9", "config": ""})
        self.assertEqual(
            data["domains"][1],
            {"domain": "TLSc<default>", "settings": {"method": "TLSv1.3", "verify_mode": "peer"}},
        )

    def test_kill(self) -> None:
        """tls.kill ID closes the connection and says so."""
        transport = FakeTransport()
        self.registry.open("in", LOCAL, ("198.51.100.9", 41000), transport, 1)
        code, out, err = self.io.cli(self, "tls.kill", "1")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out, "Killed TLS connection 1 with 198.51.100.9:41000 (no domain).\n")
        self.assertEqual(transport.lost, 1)

    def test_kill_unknown(self) -> None:
        """tls.kill of an unknown id exits 1 with one line on stderr."""
        code, out, err = self.io.cli(self, "tls.kill", "42")
        self.assertEqual((code, out), (cli.EXIT_FAILED, ""))
        self.assertEqual(err, "siptls-ctl: no TLS connection with id 42\n")

    def test_reload(self) -> None:
        """tls.reload prints the new generation (table and JSON)."""
        code, out, _ = self.io.cli(self, "tls.reload")
        self.assertEqual((code, out), (0, "TLS configuration reloaded: generation 2.\n"))
        code, out, _ = self.io.cli(self, "--json", "tls.reload")
        self.assertEqual(json.loads(out), {"generation": 2})

    def test_reload_refused(self) -> None:
        """A refused reload exits 1 with the config error on one line."""
        self.io.target.reload_result = ConfigError(
            "unknown method 'TLSv9'\n(expected one of TLSv1.2+, TLSv1.3).",
            source="tls.cfg",
            line=12,
            section="server:default",
        )
        code, out, err = self.io.cli(self, "tls.reload")
        self.assertEqual((code, out), (cli.EXIT_FAILED, ""))
        self.assertEqual(
            err,
            "siptls-ctl: TLS configuration reload refused: tls.cfg:12: [server:default] "
            "unknown method 'TLSv9' (expected one of TLSv1.2+, TLSv1.3).\n",
        )

    def test_server_failure(self) -> None:
        """An unexpected server failure exits 1 with one line."""
        self.io.target.reload_result = RuntimeError("boom")
        code, _, err = self.io.cli(self, "tls.reload")
        self.assertEqual(code, cli.EXIT_FAILED)
        self.assertTrue(err.startswith("siptls-ctl: the server failed to run tls.reload"))
        self.assertEqual(err.count("\n"), 1)
        self.flushLoggedErrors(RuntimeError)

    def test_connection_lost(self) -> None:
        """A control connection that closes mid-command exits 1 with one line."""
        d = ensureDeferred(
            cli.execute(self.io.client, cli.parse_args(["tls.info"]), StringIO(), err := StringIO())
        )
        self.io.client.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.successResultOf(d), cli.EXIT_FAILED)
        self.assertEqual(
            err.getvalue(), "siptls-ctl: the control connection closed before tls.info finished\n"
        )


class ParserTests(SynchronousTestCase):
    """siptls-ctl's command line."""

    def parse_fails(self, *argv: str) -> tuple[int, str, str]:
        out, err = StringIO(), StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        exit = self.assertRaises(SystemExit, cli.parse_args, list(argv))
        return int(exit.code or 0), out.getvalue(), err.getvalue()

    def test_unknown_command(self) -> None:
        """An unknown command exits 2 with one line naming the known ones."""
        code, _, err = self.parse_fails("tls.frobnicate")
        self.assertEqual(code, cli.EXIT_USAGE)
        self.assertEqual(err.count("\n"), 1)
        self.assertIn("unknown command 'tls.frobnicate'", err)
        self.assertIn("tls.info, tls.list, tls.options, tls.kill, tls.reload", err)

    def test_bad_id(self) -> None:
        """tls.kill with a non-number exits 2 with one line."""
        code, _, err = self.parse_fails("tls.kill", "abc")
        self.assertEqual((code, err.count("\n")), (cli.EXIT_USAGE, 1))
        self.assertTrue(err.startswith("siptls-ctl: "))

    def test_help_lists_commands(self) -> None:
        """--help lists every command and exits 0."""
        code, out, _ = self.parse_fails("--help")
        self.assertEqual(code, 0)
        for command in ["tls.info", "tls.list", "tls.options", "tls.kill", "tls.reload"]:
            self.assertIn(command, out)

    def test_default_control_path(self) -> None:
        """Without --control the default control path is used."""
        self.patch(os, "environ", {"SIPTLS_CONTROL_SOCKET": "/tmp/x/ctl.sock"})
        self.assertEqual(cli.parse_args(["tls.info"]).control, "/tmp/x/ctl.sock")


class DefaultPathTests(SynchronousTestCase):
    """default_control_path's choices."""

    def test_explicit(self) -> None:
        """$SIPTLS_CONTROL_SOCKET wins."""
        env = {"SIPTLS_CONTROL_SOCKET": "/srv/ctl.sock", "XDG_RUNTIME_DIR": "/tmp"}
        self.assertEqual(default_control_path(env, euid=1000), "/srv/ctl.sock")

    def test_xdg_runtime_dir(self) -> None:
        """A writable absolute $XDG_RUNTIME_DIR holds siptls/control.sock."""
        runtime = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, runtime)
        self.assertEqual(
            default_control_path({"XDG_RUNTIME_DIR": runtime}, euid=1000),
            os.path.join(runtime, "siptls", "control.sock"),
        )

    def test_unusable_xdg(self) -> None:
        """A relative or missing $XDG_RUNTIME_DIR is ignored."""
        for value in ["relative/dir", "/nonexistent/siptls-test-dir"]:
            self.assertEqual(
                default_control_path({"XDG_RUNTIME_DIR": value}, euid=1000, home="/home/u"),
                "/home/u/.siptls/control.sock",
            )

    def test_root_and_user(self) -> None:
        """Root uses /run/siptls; other users ~/.siptls."""
        self.assertEqual(default_control_path({}, euid=0), "/run/siptls/control.sock")
        self.assertEqual(
            default_control_path({}, euid=1000, home="/home/u"), "/home/u/.siptls/control.sock"
        )


class ControlServiceTests(TestCase):
    """The control socket on a real UNIX socket in a temporary directory."""

    def setUp(self) -> None:
        self.base = tempfile.mkdtemp(prefix="siptls-ctl-")
        self.addCleanup(shutil.rmtree, self.base, True)
        self.path = os.path.join(self.base, "run", "control.sock")
        self.registry = ConnectionRegistry(Clock())
        self.target = FakeTarget()

    def service(self) -> ControlService:
        return ControlService(
            self.path,
            lambda: ControlLocator(self.registry, self.target),
            reactor,  # type: ignore[arg-type]
        )

    def start(self) -> ControlService:
        service = self.service()
        service.startService()
        self.addCleanup(service.stopService)
        return service

    async def ask_info(self) -> dict[str, Any]:
        client = await connectProtocol(UNIXClientEndpoint(reactor, self.path), ClosableAMP())
        try:
            return await client.callRemote(TLSInfo)
        finally:
            client.transport.loseConnection()
            await client.closed

    def make_stale_socket(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(self.path)
        dead.close()

    async def test_modes(self) -> None:
        """The missing directory is created 0700 and the socket 0600; both work."""
        self.start()
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(self.path)).st_mode), 0o700)
        st = os.stat(self.path)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        self.assertEqual((await self.ask_info())["generation"], 1)

    async def test_stop_removes_socket(self) -> None:
        """stopService closes client connections and removes the socket file."""
        service = self.service()
        service.startService()
        client = await connectProtocol(UNIXClientEndpoint(reactor, self.path), ClosableAMP())
        await client.callRemote(TLSInfo)
        await service.stopService()
        await client.closed
        self.assertFalse(os.path.lexists(self.path))

    async def test_stale_socket_replaced(self) -> None:
        """A socket file nobody listens on is logged and replaced."""
        self.make_stale_socket()
        events: list[dict[str, Any]] = []
        service = self.service()
        service._log = Logger(observer=cast(ILogObserver, events.append))
        service.startService()
        self.addCleanup(service.stopService)
        self.assertTrue(any("stale" in e["log_format"] for e in events))
        self.assertEqual((await self.ask_info())["opened_connections"], 0)

    async def test_already_running(self) -> None:
        """A second server on a live socket fails clearly and leaves the first serving."""
        self.start()
        second = self.service()
        error = self.assertRaises(ControlSocketError, second.startService)
        self.assertEqual(
            str(error),
            f"another siptls server is already listening on the control socket at {self.path}; "
            "stop it or choose another control socket path.",
        )
        self.assertFalse(second.running)
        self.assertEqual((await self.ask_info())["generation"], 1)

    def test_not_a_socket(self) -> None:
        """A regular file at the socket path is an error, and is left alone."""
        os.makedirs(os.path.dirname(self.path))
        with open(self.path, "w") as f:
            f.write("keep me")
        error = self.assertRaises(ControlSocketError, self.service().startService)
        self.assertIn("is not a socket", str(error))
        with open(self.path) as f:
            self.assertEqual(f.read(), "keep me")

    async def test_cli_end_to_end(self) -> None:
        """cli.run talks to a real control socket and prints the answer."""
        self.start()
        fill(self.registry, 2)
        out, err = StringIO(), StringIO()
        args = cli.parse_args(["--control", self.path, "--json", "tls.list"])
        code = await cli.run(reactor, args, out, err)
        self.assertEqual((code, err.getvalue()), (0, ""))
        self.assertEqual(json.loads(out.getvalue())["total"], 2)

    async def test_cli_unreachable(self) -> None:
        """cli.run against a missing socket exits 3 with the one-line hint."""
        out, err = StringIO(), StringIO()
        args = cli.parse_args(["--control", self.path, "tls.info"])
        code = await cli.run(reactor, args, out, err)
        self.assertEqual(code, cli.EXIT_UNREACHABLE)
        self.assertEqual(
            err.getvalue(),
            f"siptls-ctl: cannot reach the siptls control socket at {self.path} "
            "(is the server running?)\n",
        )

    def test_cli_subprocess_not_running(self) -> None:
        """python -m siptls.control.cli against a missing socket exits 3 with one line."""
        env = dict(os.environ, PYTHONPATH=ROOT)
        result = subprocess.run(
            [sys.executable, "-m", "siptls.control.cli", "--control", self.path, "tls.info"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        self.assertEqual(result.returncode, cli.EXIT_UNREACHABLE)
        self.assertEqual(result.stdout, "")
        self.assertEqual(
            result.stderr,
            f"siptls-ctl: cannot reach the siptls control socket at {self.path} "
            "(is the server running?)\n",
        )
