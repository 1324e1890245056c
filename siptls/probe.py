"""``siptls-probe``: send one OPTIONS to a SIP-over-TLS peer and say what happened.

It uses the same outgoing machinery as the server (:mod:`siptls.outgoing`):
the same client domain selection, SNI, certificate and RFC 5922 identity
checks, so it answers "would siptls, configured like this, reach that peer?".

It prints the status line, the TLS version and cipher, the client domain and
why it was chosen, the server name sent, the peer certificate (subject, SANs,
notAfter), the chain verdict and the identity verdict.  Exit status 0 means a
2xx answer from a peer whose certificate chain verified and whose identity
matched (or was not to be checked: ``verify_identity = no``, or an IP target
with ``identity_check_ip`` off; the output says so).  Otherwise the exit
status is 1 (the peer was reached but is not verified, or did not answer 2xx)
or 2 (it could not be reached, or the configuration is wrong), and the last
line gives the reason.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from siptls.errors import SIPTLSError
from siptls.interfaces import ISIPApplication, ISIPConnection
from siptls.message import Request, Response
from siptls.outgoing import OutgoingProtocol, options_request

__all__ = ["ProbeResult", "main", "probe"]

EXIT_OK = 0
EXIT_NOT_VERIFIED = 1
EXIT_UNREACHABLE = 2


@dataclass
class ProbeResult:
    """The lines to print and the exit status."""

    code: int = EXIT_UNREACHABLE
    lines: list[str] = field(default_factory=list)


@implementer(ISIPApplication)
class _Waiter:
    """Waits for the response with one Call-ID; ignores everything else."""

    def __init__(self, call_id: bytes) -> None:
        self.call_id = call_id
        self.response: Deferred[Response] = Deferred()

    def requestReceived(self, request: Request, connection: ISIPConnection) -> None:
        if request.method != b"ACK":
            connection.reply(request, 501)

    def responseReceived(self, response: Response, connection: ISIPConnection) -> None:
        if response.call_id == self.call_id and response.status >= 200:
            if not self.response.called:
                self.response.callback(response)

    def connectionOpened(self, connection: ISIPConnection) -> None:
        pass

    def connectionClosed(self, connection: ISIPConnection, reason: str) -> None:
        if not self.response.called:
            self.response.errback(SIPTLSError(f"the connection closed: {reason}"))


async def probe(
    reactor: Any,
    uri: str,
    params: dict[str, str],
    *,
    server_name: str | None = None,
    server_id: str | None = None,
    timeout: float = 10.0,
    resolver: Any = None,
) -> ProbeResult:
    """Send one OPTIONS to ``uri`` and describe the outcome."""
    from siptls.service import SIPTLSService

    result = ProbeResult()
    lines = result.lines
    call_id = f"probe-{id(result):x}@siptls"
    waiter = _Waiter(call_id.encode())
    workdir = tempfile.mkdtemp(prefix="siptls-probe-")
    service = None
    try:
        try:
            service = SIPTLSService(
                [], params, waiter, workdir=workdir, reactor=reactor, resolver=resolver
            )
        except SIPTLSError as error:
            lines.append(f"error: {error}")
            return result
        service.startService()
        scheme = uri.split(":", 1)[0].lower()
        request_uri = uri if scheme in ("sip", "sips") else f"sips:{uri}"
        request = options_request(request_uri, call_id=call_id)
        try:
            sending = service.send(
                request, uri, server_name=server_name, server_id=server_id
            ).addTimeout(timeout, reactor)
            connection: OutgoingProtocol = await sending  # type: ignore[assignment]
        except Exception as error:  # every failure is reported, none is a traceback
            lines.append(f"error: {_describe(error)}")
            return result
        result.code = EXIT_NOT_VERIFIED
        _describe_connection(connection, lines)
        try:
            response = await waiter.response.addTimeout(timeout, reactor)
        except Exception as error:
            lines.append(f"error: no final response: {_describe(error)}")
            return result
        lines.insert(0, f"status: {response.start_line.decode('latin-1')}")
        problem = _verdict(connection, response)
        if problem is None:
            result.code = EXIT_OK
            lines.append("result: verified 2xx answer")
        else:
            lines.append(f"result: {problem}")
        connection.close()
        return result
    finally:
        if service is not None:
            await service.stopService()
        shutil.rmtree(workdir, ignore_errors=True)


def _describe(error: BaseException) -> str:
    from twisted.internet.defer import TimeoutError as DeferredTimeout

    if isinstance(error, DeferredTimeout):
        return "timed out"
    return str(error) or type(error).__name__


def _describe_connection(connection: OutgoingProtocol, lines: list[str]) -> None:
    info = connection.tls
    host, port = connection.remote
    lines.append(f"peer: {host}:{port}")
    if info is None:
        lines.append("tls: the handshake did not complete")
        return
    lines.append(f"tls: {info.version} {info.cipher} ({info.cipher_bits} bits)")
    lines.append(f"client domain: {info.domain} (chosen by {info.domain_reason})")
    lines.append(f"server name sent: {info.server_name or '(none)'}")
    peer = info.peer
    if peer is not None:
        sans = ", ".join(
            f"{kind.upper()}:{value}" for kind, values in peer.sans.items() for value in values
        )
        lines.append(f"peer certificate: subject {peer.subject}")
        lines.append(f"peer certificate: SANs {sans or '(none)'}")
        lines.append(f"peer certificate: notAfter {peer.not_after.isoformat()}")
    else:
        lines.append("peer certificate: none")
    domain = getattr(connection.transport, "domain", None)
    verifies = domain is not None and domain.settings.verify_peer
    if not verifies:
        lines.append(
            f"chain: not verified (client domain {info.domain} has verify_certificate off)"
        )
    else:
        lines.append(f"chain: {info.verification}")
    identity = connection.identity
    if identity is None:
        lines.append("identity: not checked")
    else:
        lines.append(f"identity: {'ok' if identity else 'FAILED'}: {identity.reason}")


def _verdict(connection: OutgoingProtocol, response: Response) -> str | None:
    """Why the answer is not a verified 2xx, or None when it is."""
    info = connection.tls
    transport = connection.transport
    domain = getattr(transport, "domain", None)
    if info is None or domain is None or not domain.settings.verify_peer:
        return (
            "the peer certificate was not verified: the client domain does not verify it "
            "(set verify_certificate = yes and a ca_list)"
        )
    if not info.is_peer_verified():
        return f"the peer certificate chain did not verify: {info.verification}"
    if connection.identity is not None and not connection.identity:
        return f"the peer identity did not match: {connection.identity.reason}"
    if not 200 <= response.status < 300:
        return f"the answer is {response.status}, not 2xx"
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="siptls-probe",
        description="Send one OPTIONS over TLS and report the TLS session, the client domain "
        "chosen, the peer certificate and the identity verdict.",
    )
    parser.add_argument("uri", help="sips:host[:port], sip:host;transport=tls, or host:port")
    parser.add_argument("--config", help="a tls.cfg (module parameter 'config')")
    parser.add_argument(
        "--param",
        "-p",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a TLS module parameter with Kamailio's name (repeatable)",
    )
    parser.add_argument("--server-name", help="SNI and name to check (default: the URI host)")
    parser.add_argument("--server-id", help="choose the client domain with this server_id")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per step")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``siptls-probe`` console script."""
    args = _parser().parse_args(argv)
    params: dict[str, str] = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            sys.stderr.write(f"siptls-probe: --param takes NAME=VALUE, not {item!r}.\n")
            return EXIT_UNREACHABLE
        params[name.strip()] = value
    if args.config:
        params["config"] = args.config

    from twisted.internet.task import react

    outcome: list[ProbeResult] = []

    async def run(reactor: Any) -> None:
        outcome.append(
            await probe(
                reactor,
                args.uri,
                params,
                server_name=args.server_name,
                server_id=args.server_id,
                timeout=args.timeout,
            )
        )

    try:
        react(lambda r: Deferred.fromCoroutine(run(r)))
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise
    result = outcome[0] if outcome else ProbeResult(lines=["error: the probe did not run"])
    for line in result.lines:
        print(line)
    return result.code


if __name__ == "__main__":
    sys.exit(main())
