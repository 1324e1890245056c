"""Running real peers (openssl, sipsak, kamailio...) against siptls on loopback.

The siptls server runs inside the trial reactor (a real listening socket on
127.0.0.1, port chosen by the kernel); peers run as subprocesses through the
reactor, so the server keeps serving while they talk to it.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import SkipTest, TestCase

from siptls.interfaces import ISIPApplication
from siptls.service import SIPTLSService


def require_tool(name: str) -> str:
    """The path of an installed tool, or skip the test saying how to get it."""
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None
    )
    if path is None:
        message = f"{name} is not installed (CI installs it with apt-get; see .ci/run)"
        if os.environ.get("SIPTLS_REQUIRE_PEERS"):
            raise AssertionError(message)
        raise SkipTest(message)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def sip_options(
    target: str = "sip:siptls@127.0.0.1", n: int = 1, via_host: str = "127.0.0.1:5999"
) -> bytes:
    return (
        f"OPTIONS {target} SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS {via_host};branch=z9hG4bKinterop{n}\r\n"
        f"From: <sip:interop@127.0.0.1>;tag=i{n}\r\nTo: <{target}>\r\n"
        f"Call-ID: interop-{n}@127.0.0.1\r\nCSeq: {n} OPTIONS\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class ServerTestCase(TestCase):
    """A trial test case that can start siptls services on loopback."""

    timeout = 60

    def start_server(
        self,
        params: Mapping[str, str] | None = None,
        listen: Sequence[str] | None = None,
        application: ISIPApplication | None = None,
        workdir: str | None = None,
    ) -> SIPTLSService:
        if workdir is None:
            workdir = os.path.abspath(self.mktemp())
            os.makedirs(workdir)
        if listen is None:
            listen = [f"tls:127.0.0.1:{free_port()}"]
        service = SIPTLSService(listen, params or {}, application, workdir=workdir, reactor=reactor)
        service.startService()
        self.addCleanup(self._stop, service)
        return service

    @defer.inlineCallbacks
    def _stop(self, service: SIPTLSService) -> Any:
        for record in list(service.registry):
            connection = getattr(record, "_transport", None) or getattr(record, "connection", None)
            if connection is not None:
                connection.abortConnection()
        yield service.stopService()
        # Let aborted connections finish closing before trial checks the reactor.
        yield deferLater(0.05)

    @staticmethod
    def port_of(service: SIPTLSService, index: int = 0) -> int:
        return int(service.ports[index].getHost().port)

    def run_tool(
        self,
        executable: str,
        args: Sequence[str],
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 20,
        *,
        until: bytes | None = None,
        close_stdin_after: float | None = 2.0,
    ) -> defer.Deferred[tuple[bytes, bytes, int]]:
        """Run a peer; its output, error output and exit code (-1 when killed).

        ``until`` and ``close_stdin_after`` are as for :func:`run_process`.
        """
        return run_process(
            executable, args, stdin, env, timeout, until=until, close_stdin_after=close_stdin_after
        )


def deferLater(seconds: float) -> defer.Deferred[None]:
    from twisted.internet.task import deferLater as later

    return later(reactor, seconds, lambda: None)


def run_process(
    executable: str,
    args: Sequence[str],
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 20,
    *,
    until: bytes | None = None,
    close_stdin_after: float | None = 2.0,
) -> defer.Deferred[tuple[bytes, bytes, int]]:
    """Spawn a process through the reactor, feeding ``stdin``; kill it at ``timeout``.

    The process's standard input is closed (so tools such as ``openssl
    s_client`` that read until end of input finish) as soon as its output or
    error output contains ``until``, or ``close_stdin_after`` seconds after
    it started, whichever comes first; ``close_stdin_after=None`` with no
    ``until`` leaves it open until the process ends or is killed.
    """
    from twisted.internet import protocol

    result: defer.Deferred[tuple[bytes, bytes, int]] = defer.Deferred()

    class Collector(protocol.ProcessProtocol):
        def __init__(self) -> None:
            self.out: list[bytes] = []
            self.err: list[bytes] = []
            self.stdin_open = True
            self.closer: Any = None

        def connectionMade(self) -> None:
            if stdin is not None:
                self.transport.write(stdin)
            if close_stdin_after is not None:
                self.closer = reactor.callLater(close_stdin_after, self.close_stdin)

        def close_stdin(self) -> None:
            if self.closer is not None and self.closer.active():
                self.closer.cancel()
            if self.stdin_open:
                self.stdin_open = False
                self.transport.closeStdin()

        def _check_until(self) -> None:
            if until is not None and self.stdin_open:
                if until in b"".join(self.out) or until in b"".join(self.err):
                    self.close_stdin()

        def outReceived(self, data: bytes) -> None:
            self.out.append(data)
            self._check_until()

        def errReceived(self, data: bytes) -> None:
            self.err.append(data)
            self._check_until()

        def processEnded(self, reason: Any) -> None:
            if killer.active():
                killer.cancel()
            if self.closer is not None and self.closer.active():
                self.closer.cancel()
            code = getattr(reason.value, "exitCode", None)
            result.callback((b"".join(self.out), b"".join(self.err), -1 if code is None else code))

    collector = Collector()
    environment = dict(os.environ)
    environment.update(env or {})
    transport = reactor.spawnProcess(collector, executable, [executable, *args], env=environment)

    def kill() -> None:
        try:
            transport.signalProcess("KILL")
        except Exception:
            pass

    killer = reactor.callLater(timeout, kill)
    return result
