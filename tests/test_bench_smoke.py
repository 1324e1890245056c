"""Smoke test of the benchmark harness against the stand-in responder.

Starts ``bench/standin.py`` on loopback (once answering 200, once answering
a wrong status) and runs tiny trunk, crowd and handshake loads, so a change
that breaks response counting or status checking shows up here.  A second or
two in all.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from bench import loadgen, servers

ROOT = Path(__file__).resolve().parent.parent


def _certificate(directory: str) -> tuple[str, str]:
    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    issued.cert_chain_pems[0].write_to_path(cert)
    issued.private_key_pem.write_to_path(key)
    return cert, key


class StandinLoadTests(SynchronousTestCase):
    """The load generators count and check responses from a real TLS server."""

    status = "200 OK"

    def setUp(self) -> None:
        tmp = tempfile.mkdtemp(prefix="bench-smoke-")
        cert, key = _certificate(tmp)
        self.port = servers.free_port()
        workdir = Path(tmp)
        self.server = servers.Server(
            "standin",
            [
                sys.executable,
                str(ROOT / "bench" / "standin.py"),
                "--port",
                str(self.port),
                "--certificate",
                cert,
                "--private-key",
                key,
                "--status",
                self.status,
            ],
            workdir,
            self.port,
        )
        self.addCleanup(self.server.stop)
        self.server.proc = subprocess.Popen(
            self.server.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.addr = ("127.0.0.1", self.port)
        self._wait_listening()

    def _wait_listening(self) -> None:
        import time

        deadline = time.monotonic() + 15
        while True:
            try:
                loadgen.probe(self.addr, timeout=1.0)
                return
            except (OSError, loadgen.ConnectionClosed):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def meter(self) -> loadgen.Meter:
        return loadgen.Meter(self.server.pid)

    def test_trunk_counts_every_response(self) -> None:
        """Pipelined trunk load gets exactly one 200 per request and measures server CPU."""
        r = loadgen.trunk(self.addr, self.meter(), count=300, window=25, seconds=5)
        self.assertEqual(
            (r["sent"], r["responses_ok"], r["bad_status"], r["unmatched"], r["missing"]),
            (300, 300, 0, 0, 0),
        )
        self.assertTrue(r["all_ok"])
        self.assertGreater(r["server_cpu_s"], 0)

    def test_crowd_records_a_latency_per_response(self) -> None:
        """Crowd load keeps one request per connection and records every latency."""
        r = loadgen.crowd(self.addr, self.meter(), connections=5, count=100, seconds=5)
        self.assertEqual((r["responses_ok"], r["missing"]), (100, 0))
        self.assertEqual(len(r["latencies_s"]), 100)
        self.assertLessEqual(r["p50_ms"], r["p99_ms"])

    def test_handshakes_one_request_per_connection(self) -> None:
        """Each new connection gets its handshake and one answered OPTIONS."""
        r = loadgen.handshakes(self.addr, self.meter(), count=10, seconds=5, parallel=2)
        self.assertEqual((r["started"], r["responses_ok"], r["failures"]), (10, 10, 0))


class WrongStatusTests(StandinLoadTests):
    """A server answering 503 is caught: nothing counts as OK."""

    status = "503 Service Unavailable"

    def test_trunk_counts_every_response(self) -> None:
        """Every 503 is counted as a bad status, none as OK."""
        r = loadgen.trunk(self.addr, self.meter(), count=50, window=10, seconds=5)
        self.assertEqual((r["responses_ok"], r["bad_status"]), (0, 50))
        self.assertEqual(r["other_statuses"], {"503": 50})
        self.assertFalse(r["all_ok"])

    def test_crowd_records_a_latency_per_response(self) -> None:
        """Crowd load flags the wrong status too."""
        r = loadgen.crowd(self.addr, self.meter(), connections=3, count=30, seconds=5)
        self.assertEqual((r["responses_ok"], r["bad_status"]), (0, 30))
        self.assertFalse(r["all_ok"])

    def test_handshakes_one_request_per_connection(self) -> None:
        """Handshake load flags the wrong status."""
        r = loadgen.handshakes(self.addr, self.meter(), count=5, seconds=5, parallel=1)
        self.assertEqual((r["responses_ok"], r["bad_status"]), (0, 5))


class ResponseReaderTests(SynchronousTestCase):
    """The response framer splits a byte stream into (status, CSeq) pairs."""

    response = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS 127.0.0.1:1;branch=z9hG4bKx\r\n"
        b"CSeq: 7 OPTIONS\r\nContent-Length: 4\r\n\r\nbody"
    )

    def test_whole_and_byte_by_byte(self) -> None:
        """Two responses give the same result fed whole or one byte at a time."""
        data = self.response + b"\r\n" + self.response.replace(b"200 OK", b"486 Busy")
        self.assertEqual(loadgen.ResponseReader().feed(data), [(200, 7), (486, 7)])
        reader = loadgen.ResponseReader()
        got = []
        for i in range(len(data)):
            got.extend(reader.feed(data[i : i + 1]))
        self.assertEqual(got, [(200, 7), (486, 7)])

    def test_not_a_response(self) -> None:
        """A message that is no response comes out as status 0 so it counts as wrong."""
        self.assertEqual(loadgen.ResponseReader().feed(b"garbage\r\ncseq: 3 X\r\n\r\n"), [(0, 3)])


class QuickRunTests(SynchronousTestCase):
    """``bench/run.py --quick`` runs end to end and writes its JSON."""

    def test_quick_trunk_standin(self) -> None:
        """A one-run quick trunk against the stand-in gives a median figure in results.json."""
        import json

        from bench import run

        out = tempfile.mkdtemp(prefix="bench-quick-")
        args = ["--quick", "--runs", "1", "--servers", "standin", "--scenarios", "trunk"]
        self.assertEqual(run.main([*args, "--out", out, "--plot-python", ""]), 0)
        result = json.loads(Path(out, "results.json").read_text())
        trunk = result["servers"]["standin"]["trunk"]
        self.assertEqual(trunk["responses_ok"], 500)
        self.assertGreater(trunk["msgs_per_server_cpu_s"], 0)
