"""``siptls-ctl``: the command-line client of the siptls control socket.

    siptls-ctl [--control PATH] [--json] COMMAND [ARG]

Commands mirror Kamailio's TLS RPCs: ``tls.info``, ``tls.list``,
``tls.options``, ``tls.kill ID``, ``tls.reload``.  Output is an aligned table,
or JSON with ``--json``.  Exit status: 0 on success, 1 when the server
answered with an error, 2 on a usage error, 3 when the server cannot be
reached; every error is one line on standard error.

`main` parses the command line and runs `run` under `task.react`; `execute`
does the work over an already connected AMP protocol, so tests can drive it in
memory.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import IO, Any, NoReturn

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.error import ConnectError, ConnectionClosed
from twisted.internet.interfaces import IReactorCore
from twisted.internet.task import react
from twisted.protocols import amp
from twisted.python.failure import Failure

from siptls.config import format_address
from siptls.control.commands import TLSInfo, TLSKill, TLSList, TLSOptions, TLSReload
from siptls.control.server import default_control_path
from siptls.errors import ConfigError, SIPTLSError

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "build_parser",
    "execute",
    "main",
    "parse_args",
    "run",
]

PROG = "siptls-ctl"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

#: Connections asked for per `TLSList` call; the server may send fewer.
DEFAULT_PAGE_SIZE = 500

_COMMANDS = {
    "tls.info": "show connection counts and handshake counters",
    "tls.list": "list live TLS connections (all pages)",
    "tls.options": "show the effective global parameters and TLS domains",
    "tls.kill": "close the TLS connection with the given id",
    "tls.reload": "reload the TLS configuration (tls.cfg)",
}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like every other siptls-ctl error."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("argument COMMAND: invalid choice"):
            given = message.split("'")[1] if "'" in message else "?"
            message = f"unknown command {given!r} (expected one of {', '.join(_COMMANDS)})"
        self.exit(EXIT_USAGE, f"{PROG}: {message}; see {PROG} --help\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``siptls-ctl`` argument parser."""
    parser = _Parser(
        prog=PROG,
        description="Query and control a running siptls server over its control socket.",
        epilog="Exit status: 0 success, 1 the server refused or failed the command, "
        "2 usage error, 3 the server cannot be reached.",
    )
    parser.add_argument(
        "--control",
        metavar="PATH",
        default=None,
        help=f"control socket path (default: {default_control_path()})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", title="commands", required=True
    )
    for name, text in _COMMANDS.items():
        sub = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        if name == "tls.list":
            sub.add_argument("--peer", help="only connections with this remote host or host:port")
            sub.add_argument("--domain", help="only connections of this TLS domain")
            sub.add_argument("--sni", help="only connections with this SNI server name")
            sub.add_argument(
                "--limit",
                type=_positive_int,
                metavar="N",
                help="show at most N connections (default: all)",
            )
            sub.add_argument(
                "--page-size",
                type=_positive_int,
                default=DEFAULT_PAGE_SIZE,
                metavar="N",
                help="connections asked for per request (default: %(default)s)",
            )
        elif name == "tls.kill":
            sub.add_argument("id", type=int, metavar="ID", help="connection id (from tls.list)")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``); exits with status 2 on a usage error."""
    args = build_parser().parse_args(argv)
    if args.control is None:
        args.control = default_control_path()
    return args


# -- output -------------------------------------------------------------------


def _address(host: str, port: int) -> str:
    return format_address((host, port))


def _timestamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Rows under headers in aligned columns; numbers right-aligned."""
    texts = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in texts:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    numeric = [
        bool(rows) and all(isinstance(row[i], int) for row in rows) for i in range(len(headers))
    ]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers)] + [line(row) for row in texts]) + "\n"


def _pairs(pairs: Sequence[tuple[str, object]], indent: str = "") -> str:
    width = max((len(n) for n, _ in pairs), default=0)
    return "".join(f"{indent}{n.ljust(width)}  {v}".rstrip() + "\n" for n, v in pairs)


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- commands -----------------------------------------------------------------


async def _info(proto: amp.AMP, args: argparse.Namespace, out: IO[str]) -> None:
    answer = await proto.callRemote(TLSInfo)
    failed = {e["reason"]: e["count"] for e in answer["handshakes_failed"]}
    generations = {e["generation"]: e["connections"] for e in answer["generations"]}
    if args.json:
        data = dict(answer)
        data["handshakes_failed"] = failed
        data["generations"] = {str(g): n for g, n in generations.items()}
        out.write(json.dumps(data, indent=2) + "\n")
        return
    rows: list[tuple[str, object]] = [
        ("max_connections", answer["max_connections"]),
        ("opened_connections", answer["opened_connections"]),
        ("clear_text_write_queued_bytes", answer["clear_text_write_queued_bytes"]),
        ("uptime", f"{answer['uptime']:.1f} s"),
        ("generation", answer["generation"]),
        ("opened_total", answer["opened_total"]),
        ("refused", answer["refused"]),
        ("handshakes_ok", answer["handshakes_ok"]),
        ("handshakes_failed", sum(failed.values())),
    ]
    rows += [(f"  {reason}", count) for reason, count in failed.items()]
    rows += [(f"connections[generation {g}]", n) for g, n in generations.items()]
    out.write(_pairs(rows))


_LIST_HEADERS = (
    "ID",
    "DIR",
    "STATE",
    "REMOTE",
    "LOCAL",
    "DOMAIN",
    "SNI",
    "TLS",
    "CIPHER",
    "VERIFY",
    "GEN",
    "BYTES_IN",
    "BYTES_OUT",
    "CREATED",
)


async def _list(proto: amp.AMP, args: argparse.Namespace, out: IO[str]) -> None:
    entries: list[dict[str, Any]] = []
    total: int | None = None
    after: int | None = None
    wanted = args.limit
    while wanted is None or len(entries) < wanted:
        size = args.page_size if wanted is None else min(args.page_size, wanted - len(entries))
        answer = await proto.callRemote(
            TLSList,
            after=after,
            limit=size,
            peer=args.peer,
            domain=args.domain,
            sni=args.sni,
        )
        if total is None:
            total = answer["total"]
        entries.extend(answer["connections"])
        if not answer["more"] or answer["last_id"] is None:
            break
        after = answer["last_id"]
    total = total or 0
    if args.json:
        out.write(json.dumps({"total": total, "connections": entries}, indent=2) + "\n")
        return
    rows = [
        (
            e["id"],
            e["direction"],
            e["state"],
            _address(e["remote_host"], e["remote_port"]),
            _address(e["local_host"], e["local_port"]),
            e["domain"],
            e["sni"],
            e["tls_version"],
            e["cipher"],
            e["verification"],
            e["generation"],
            e["bytes_in"],
            e["bytes_out"],
            _timestamp(e["created"]),
        )
        for e in entries
    ]
    out.write(format_table(_LIST_HEADERS, rows))
    noun = "connection" if total == 1 else "connections"
    if len(entries) < total:
        out.write(f"{len(entries)} of {total} {noun} shown\n")
    else:
        out.write(f"{total} {noun}\n")


async def _options(proto: amp.AMP, args: argparse.Namespace, out: IO[str]) -> None:
    globals_: list[dict[str, str]] = []
    domains: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        answer = await proto.callRemote(TLSOptions, domain_offset=offset)
        globals_ = answer["globals"]
        domains.extend(answer["domains"])
        offset = answer["next_domain_offset"]
    if args.json:
        data = {
            "globals": {p["name"]: p["value"] for p in globals_},
            "domains": [
                {"domain": d["domain"], "settings": {p["name"]: p["value"] for p in d["settings"]}}
                for d in domains
            ],
        }
        out.write(json.dumps(data, indent=2) + "\n")
        return
    out.write("Global parameters:\n")
    out.write(_pairs([(p["name"], p["value"]) for p in globals_], indent="  "))
    for d in domains:
        out.write(f"\nDomain {d['domain']}:\n")
        out.write(_pairs([(p["name"], p["value"]) for p in d["settings"]], indent="  "))


async def _kill(proto: amp.AMP, args: argparse.Namespace, out: IO[str]) -> None:
    answer = await proto.callRemote(TLSKill, id=args.id)
    if args.json:
        out.write(json.dumps({"killed": answer}, indent=2) + "\n")
        return
    peer = _address(answer["remote_host"], answer["remote_port"])
    domain = answer["domain"] or "no domain"
    out.write(f"Killed TLS connection {answer['id']} with {peer} ({domain}).\n")


async def _reload(proto: amp.AMP, args: argparse.Namespace, out: IO[str]) -> None:
    try:
        answer = await proto.callRemote(TLSReload)
    except ConfigError as e:
        raise ConfigError(f"TLS configuration reload refused: {e}") from e
    if args.json:
        out.write(json.dumps({"generation": answer["generation"]}, indent=2) + "\n")
        return
    out.write(f"TLS configuration reloaded: generation {answer['generation']}.\n")


_RUNNERS = {
    "tls.info": _info,
    "tls.list": _list,
    "tls.options": _options,
    "tls.kill": _kill,
    "tls.reload": _reload,
}


async def execute(proto: amp.AMP, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Run the command in ``args`` over the connected ``proto``; the exit status.

    Output goes to ``out``; an error is one line on ``err``.
    """
    try:
        await _RUNNERS[args.command](proto, args, out)
    except SIPTLSError as e:
        err.write(f"{PROG}: {_one_line(str(e))}\n")
        return EXIT_FAILED
    except amp.UnknownRemoteError as e:
        err.write(f"{PROG}: the server failed to run {args.command}: {_one_line(str(e))}\n")
        return EXIT_FAILED
    except ConnectionClosed:
        err.write(f"{PROG}: the control connection closed before {args.command} finished\n")
        return EXIT_FAILED
    return EXIT_OK


class ClosableAMP(amp.AMP):
    """AMP that lets the client wait until its connection has really closed."""

    def __init__(self) -> None:
        super().__init__()
        self.closed: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        super().connectionLost(reason)
        self.closed.callback(None)


def _endpoint_path(path: str) -> str:
    # clientFromString splits on ':' and treats '\' as an escape.
    return path.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


async def run(reactor: IReactorCore, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Connect to ``args.control``, run the command, disconnect; the exit status."""
    endpoint = clientFromString(reactor, f"unix:path={_endpoint_path(args.control)}:timeout=5")
    try:
        proto = await connectProtocol(endpoint, ClosableAMP())
    except ConnectError:
        err.write(
            f"{PROG}: cannot reach the siptls control socket at {args.control} "
            "(is the server running?)\n"
        )
        return EXIT_UNREACHABLE
    try:
        return await execute(proto, args, out, err)
    finally:
        if proto.transport is not None:
            proto.transport.loseConnection()
            await proto.closed


async def _react_main(reactor: IReactorCore, args: argparse.Namespace) -> None:
    status = await run(reactor, args, sys.stdout, sys.stderr)
    if status:
        raise SystemExit(status)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``siptls-ctl`` console script; exits with the command's status."""
    args = parse_args(argv)
    react(_react_main, (args,))


if __name__ == "__main__":
    main()
