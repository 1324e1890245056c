"""Load generators for SIP OPTIONS over TLS, using only the standard library.

Theory of operation: every scenario drives non-blocking ``ssl.SSLSocket``s
from one ``selectors`` loop in this process, so the generator costs one core
at most and its CPU time is easy to report (``time.process_time``).  Each
request carries a unique CSeq number (and Call-ID and Via branch derived from
it); each response is framed by its blank line and Content-Length, and its
status and CSeq are checked against the requests still outstanding.  Every
loop is bounded by a message count *and* a wall-clock deadline.

A :class:`Meter` brackets the measured phase of a scenario (after the
connections it needs are up), reading the server's CPU time from /proc and
the generator's own CPU time, so the figures are "per server CPU-second".
"""

from __future__ import annotations

import errno
import os
import re
import resource
import selectors
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench import procstat

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE


class ScenarioError(Exception):
    """A scenario could not run (connection refused, deadline hit while setting up...)."""


def client_context() -> ssl.SSLContext:
    """A client context that does not verify the server and never resumes.

    No session is ever passed to ``wrap_socket``, so every connection makes a
    full handshake; ``OP_NO_TICKET`` also stops TLS 1.2 ticket exchange.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_TICKET
    return ctx


# ---------------------------------------------------------------------------
# Requests and responses


class RequestMaker:
    """Builds OPTIONS requests whose CSeq, Call-ID and Via branch all carry ``n``."""

    def __init__(self, host: str, port: int, tag: str) -> None:
        self.template = (
            f"OPTIONS sip:bench@{host}:{port};transport=tls SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS {host}:%d;branch=z9hG4bK-{tag}-%d;rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:bench@{host}>;tag={tag}\r\n"
            f"To: <sip:bench@{host}:{port}>\r\n"
            f"Call-ID: {tag}-%d@{host}\r\n"
            f"CSeq: %d OPTIONS\r\n"
            f"User-Agent: siptls-bench\r\n"
            f"Content-Length: 0\r\n\r\n"
        ).encode("ascii")

    def make(self, local_port: int, n: int) -> bytes:
        return self.template % (local_port, n, n, n)


_STATUS = re.compile(rb"SIP/2\.0 (\d{3}) ")
_CSEQ = re.compile(rb"\r\n(?:cseq)[ \t]*:[ \t]*(\d+)", re.IGNORECASE)
_LENGTH = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*(\d+)", re.IGNORECASE)


class ResponseReader:
    """Frames SIP responses from a byte stream: ``feed(bytes)`` -> [(status, cseq)].

    A message that is not a response, or a response without a CSeq number,
    comes out as status 0 / cseq -1 so the caller counts it as an error.
    """

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[tuple[int, int]]:
        buf = self.buffer + data if self.buffer else data
        out = []
        start = 0
        while True:
            # Keep-alive CRLFs between messages are skipped.
            while buf.startswith(b"\r\n", start):
                start += 2
            end = buf.find(b"\r\n\r\n", start)
            if end < 0:
                break
            head = buf[start : end + 2]
            length = _LENGTH.search(head)
            stop = end + 4 + (int(length.group(1)) if length else 0)
            if stop > len(buf):
                break
            status = _STATUS.match(head)
            cseq = _CSEQ.search(head)
            out.append((int(status.group(1)) if status else 0, int(cseq.group(1)) if cseq else -1))
            start = stop
        self.buffer = buf[start:]
        return out


# ---------------------------------------------------------------------------
# Measurement


@dataclass
class Meter:
    """Brackets a measured phase: wall time, server CPU, generator CPU."""

    server_pid: int | None
    wall: float = 0.0
    server_cpu: float = 0.0
    generator_cpu: float = 0.0
    server_cpu_ticks: float = 0.0
    _marks: tuple[float, float, float, int | None] = (0.0, 0.0, 0.0, None)
    _children0: float = 0.0

    def _server(self) -> tuple[float, int | None]:
        if not self.server_pid:
            return 0.0, None
        return (
            procstat.tree_cpu_seconds(self.server_pid),
            procstat.tree_cpu_ns(self.server_pid),
        )

    def start(self) -> None:
        ticks, ns = self._server()
        self._marks = (time.perf_counter(), time.process_time(), ticks, ns)

    def stop(self, children: bool = False) -> None:
        wall0, gen0, ticks0, ns0 = self._marks
        ticks, ns = self._server()
        self.server_cpu_ticks = ticks - ticks0
        # schedstat (ns) when the kernel has it, else utime+stime.
        if ns is not None and ns0 is not None:
            self.server_cpu = (ns - ns0) / 1e9
        else:
            self.server_cpu = self.server_cpu_ticks
        self.wall = time.perf_counter() - wall0
        self.generator_cpu = time.process_time() - gen0
        if children:
            self.generator_cpu += _children_cpu() - self._children0

    def start_children(self) -> None:
        self._children0 = _children_cpu()
        self.start()

    def figures(self) -> dict[str, float]:
        return {
            "wall_s": self.wall,
            "server_cpu_s": self.server_cpu,
            "server_cpu_ticks_s": self.server_cpu_ticks,
            "generator_cpu_s": self.generator_cpu,
            "generator_cpu_share": self.generator_cpu / self.wall if self.wall else 0.0,
            "server_cpu_share": self.server_cpu / self.wall if self.wall else 0.0,
        }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _per(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


# ---------------------------------------------------------------------------
# One non-blocking TLS client connection


class ConnectionClosed(Exception):
    pass


class Conn:
    """A non-blocking TLS client connection registered in a selector."""

    __slots__ = ("sock", "sel", "events", "ready", "out", "reader", "local_port", "sent_at", "data")

    def __init__(self, ctx: ssl.SSLContext, addr: tuple[str, int], sel: selectors.BaseSelector):
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setblocking(False)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = ctx.wrap_socket(raw, do_handshake_on_connect=False)
        rc = self.sock.connect_ex(addr)
        if rc not in (0, errno.EINPROGRESS):
            self.sock.close()
            raise OSError(rc, f"cannot connect to {addr[0]}:{addr[1]}: {os.strerror(rc)}")
        self.sel = sel
        self.events = WRITE
        self.ready = False
        self.out = b""
        self.reader = ResponseReader()
        self.local_port = 0
        self.sent_at = 0.0
        self.data: object = None
        sel.register(self.sock, WRITE, self)

    def _want(self, events: int) -> None:
        if events != self.events:
            self.sel.modify(self.sock, events, self)
            self.events = events

    def handshake(self) -> bool:
        """Advance the handshake; True once it is complete."""
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want(READ)
            return False
        except ssl.SSLWantWriteError:
            self._want(WRITE)
            return False
        self.ready = True
        self.local_port = self.sock.getsockname()[1]
        self._want(READ)
        return True

    def send(self, data: bytes) -> None:
        self.out = self.out + data if self.out else data
        self.flush()

    def flush(self) -> None:
        while self.out:
            try:
                n = self.sock.send(self.out)
            except ssl.SSLWantWriteError:
                self._want(READ | WRITE)
                return
            except ssl.SSLWantReadError:
                self._want(READ)
                return
            self.out = self.out[n:]
        self._want(READ)

    def receive(self) -> list[tuple[int, int]]:
        got: list[tuple[int, int]] = []
        while True:
            try:
                data = self.sock.recv(262144)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return got
            if not data:
                raise ConnectionClosed()
            got.extend(self.reader.feed(data))

    def on_event(self, events: int) -> list[tuple[int, int]]:
        """Handle selector events: finish the handshake, flush, read."""
        if not self.ready:
            self.handshake()
            return []
        if events & WRITE and self.out:
            self.flush()
        if events & READ:
            return self.receive()
        return []

    def close(self) -> None:
        try:
            self.sel.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self.sock.close()


def _open(
    ctx: ssl.SSLContext,
    addr: tuple[str, int],
    sel: selectors.BaseSelector,
    count: int,
    deadline: float,
    parallel: int = 64,
) -> list[Conn]:
    """Open ``count`` connections and finish their handshakes, ``parallel`` at a time."""
    done: list[Conn] = []
    pending = 0
    started = 0
    while len(done) < count:
        while started < count and pending < parallel:
            Conn(ctx, addr, sel)
            started += 1
            pending += 1
        if time.monotonic() > deadline:
            raise ScenarioError(f"only {len(done)} of {count} TLS connections were set up in time")
        for key, _events in sel.select(0.5):
            conn: Conn = key.data
            if not conn.ready:
                try:
                    if conn.handshake():
                        done.append(conn)
                        pending -= 1
                except (OSError, ssl.SSLError) as e:
                    raise ScenarioError(f"TLS handshake failed: {e}") from e
    return done


@dataclass
class Tally:
    """Checks responses against outstanding CSeq numbers."""

    outstanding: set[int] = field(default_factory=set)
    ok: int = 0
    bad_status: int = 0
    unmatched: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def check(self, status: int, cseq: int) -> bool:
        """Count one response; True when it matched an outstanding request."""
        if cseq not in self.outstanding:
            self.unmatched += 1
            return False
        self.outstanding.discard(cseq)
        if status == 200:
            self.ok += 1
        else:
            self.bad_status += 1
            self.statuses[status] = self.statuses.get(status, 0) + 1
        return True

    def figures(self) -> dict[str, object]:
        return {
            "responses_ok": self.ok,
            "bad_status": self.bad_status,
            "unmatched": self.unmatched,
            "missing": len(self.outstanding),
            "other_statuses": {str(k): v for k, v in self.statuses.items()},
            "all_ok": self.bad_status == 0 and self.unmatched == 0,
        }


# ---------------------------------------------------------------------------
# Scenarios


def trunk(
    addr: tuple[str, int],
    meter: Meter,
    count: int = 20000,
    window: int = 100,
    seconds: float = 10.0,
    ctx: ssl.SSLContext | None = None,
) -> dict[str, object]:
    """Pipelined OPTIONS over one persistent connection, ``window`` in flight."""
    ctx = ctx or client_context()
    sel = selectors.DefaultSelector()
    deadline = time.monotonic() + seconds
    (conn,) = _open(ctx, addr, sel, 1, time.monotonic() + 10)
    maker = RequestMaker(addr[0], addr[1], f"t{os.getpid()}")
    tally = Tally()
    sent = 0
    meter.start()
    try:
        while tally.ok + tally.bad_status < count and time.monotonic() < deadline:
            room = min(window - len(tally.outstanding), count - sent)
            if room > 0:
                first = sent + 1
                sent += room
                tally.outstanding.update(range(first, sent + 1))
                conn.send(b"".join(maker.make(conn.local_port, n) for n in range(first, sent + 1)))
            for _key, events in sel.select(1.0):
                for status, cseq in conn.on_event(events):
                    tally.check(status, cseq)
    except ConnectionClosed:
        pass
    meter.stop()
    conn.close()
    sel.close()
    answered = tally.ok + tally.bad_status
    return {
        "sent": sent,
        **tally.figures(),
        **meter.figures(),
        "msgs_per_s": _per(answered, meter.wall),
        "msgs_per_server_cpu_s": _per(answered, meter.server_cpu),
        "window": window,
    }


def crowd(
    addr: tuple[str, int],
    meter: Meter,
    connections: int = 100,
    count: int = 20000,
    seconds: float = 10.0,
    ctx: ssl.SSLContext | None = None,
) -> dict[str, object]:
    """``connections`` connections, each with exactly one request in flight."""
    ctx = ctx or client_context()
    sel = selectors.DefaultSelector()
    conns = _open(ctx, addr, sel, connections, time.monotonic() + 30)
    maker = RequestMaker(addr[0], addr[1], f"c{os.getpid()}")
    tally = Tally()
    latencies: list[float] = []
    sent = 0
    clock = time.perf_counter
    deadline = time.monotonic() + seconds
    meter.start()

    def send_next(conn: Conn) -> None:
        nonlocal sent
        sent += 1
        tally.outstanding.add(sent)
        conn.sent_at = clock()
        conn.send(maker.make(conn.local_port, sent))

    try:
        for conn in conns[:count]:
            send_next(conn)
        while tally.outstanding and time.monotonic() < deadline:
            for key, events in sel.select(1.0):
                conn = key.data
                for status, cseq in conn.on_event(events):
                    if tally.check(status, cseq):
                        latencies.append(clock() - conn.sent_at)
                        if sent < count:
                            send_next(conn)
    except ConnectionClosed:
        pass
    meter.stop()
    for conn in conns:
        conn.close()
    sel.close()
    answered = tally.ok + tally.bad_status
    ordered = sorted(latencies)
    return {
        "connections": connections,
        "sent": sent,
        **tally.figures(),
        **meter.figures(),
        "msgs_per_s": _per(answered, meter.wall),
        "msgs_per_server_cpu_s": _per(answered, meter.server_cpu),
        "p50_ms": _quantile(ordered, 0.50) * 1000,
        "p99_ms": _quantile(ordered, 0.99) * 1000,
        "max_ms": (ordered[-1] * 1000) if ordered else float("nan"),
        "latencies_s": latencies,
    }


def _quantile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def handshakes(
    addr: tuple[str, int],
    meter: Meter,
    count: int = 5000,
    seconds: float = 5.0,
    parallel: int = 8,
    ctx: ssl.SSLContext | None = None,
) -> dict[str, object]:
    """A new connection per request: full handshake, one OPTIONS, read the 200, close."""
    ctx = ctx or client_context()
    sel = selectors.DefaultSelector()
    maker = RequestMaker(addr[0], addr[1], f"h{os.getpid()}")
    tally = Tally()
    started = 0
    live = 0
    failures = 0
    deadline = time.monotonic() + seconds
    meter.start()
    while time.monotonic() < deadline:
        while started < count and live < parallel:
            started += 1
            live += 1
            Conn(ctx, addr, sel).data = started
        if live == 0:
            break
        for key, events in sel.select(1.0):
            conn: Conn = key.data
            try:
                if not conn.ready:
                    if conn.handshake():
                        tally.outstanding.add(conn.data)
                        conn.send(maker.make(conn.local_port, conn.data))
                    continue
                for status, cseq in conn.on_event(events):
                    tally.check(status, cseq)
                    conn.close()
                    live -= 1
            except (ConnectionClosed, OSError, ssl.SSLError):
                failures += 1
                conn.close()
                live -= 1
    meter.stop()
    for key in list(sel.get_map().values()):
        key.data.close()
    sel.close()
    done = tally.ok + tally.bad_status
    return {
        "started": started,
        "failures": failures,
        "parallel": parallel,
        **tally.figures(),
        **meter.figures(),
        "handshakes_per_s": _per(done, meter.wall),
        "handshakes_per_server_cpu_s": _per(done, meter.server_cpu),
    }


_S_TIME = re.compile(rb"(\d+) connections in ([\d.]+) real seconds")


def s_time(
    addr: tuple[str, int], meter: Meter, seconds: int = 5, openssl: str = "openssl"
) -> dict[str, object]:
    """``openssl s_time -new``: full handshakes, no application data."""
    argv = [openssl, "s_time", "-connect", f"{addr[0]}:{addr[1]}", "-new", "-time", str(seconds)]
    meter.start_children()
    proc = subprocess.run(argv, capture_output=True, timeout=seconds + 30)
    meter.stop(children=True)
    found = _S_TIME.search(proc.stdout)
    if not found:
        raise ScenarioError(
            f"could not find 'N connections in T real seconds' in the output of "
            f"{' '.join(argv)}: {proc.stdout[-300:]!r} {proc.stderr[-300:]!r}"
        )
    done = int(found.group(1))
    return {
        "connections": done,
        "s_time_real_seconds": float(found.group(2)),
        **meter.figures(),
        # s_time counts whole seconds; our own wall clock is finer.
        "handshakes_per_s": _per(done, meter.wall),
        "handshakes_per_server_cpu_s": _per(done, meter.server_cpu),
    }


def idle(
    addr: tuple[str, int],
    meter: Meter,
    steps: tuple[int, ...] = (1000, 10000),
    settle: float = 1.0,
    seconds: float = 120.0,
    parallel: int = 64,
    memory: Callable[[], int] | None = None,
    ctx: ssl.SSLContext | None = None,
) -> dict[str, object]:
    """Hold ``steps`` established connections (each answered one OPTIONS); memory per connection.

    Connections are brought up ``parallel`` at a time, each through handshake,
    one OPTIONS and its 200, then left idle (still watched, so a server that
    drops idle connections is noticed).  ``memory`` returns the server's
    memory in KiB (defaults to the PSS of the meter's process tree).
    """
    ctx = ctx or client_context()
    if memory is None:
        pid = meter.server_pid
        memory = (lambda: procstat.tree_memory_kib(pid)) if pid else (lambda: 0)
    sel = selectors.DefaultSelector()
    maker = RequestMaker(addr[0], addr[1], f"i{os.getpid()}")
    tally = Tally()
    deadline = time.monotonic() + seconds
    started = 0
    serial = 0
    busy = 0
    parked: list[Conn] = []
    time.sleep(settle)
    base = memory()
    out: dict[str, object] = {"base_kib": base, "parallel": parallel}
    try:
        for target in steps:
            while len(parked) < target:
                while started < target and busy < parallel:
                    Conn(ctx, addr, sel)
                    started += 1
                    busy += 1
                if time.monotonic() > deadline:
                    raise ScenarioError(
                        f"only {len(parked)} of {target} idle connections were up in time"
                    )
                for key, events in sel.select(0.5):
                    conn: Conn = key.data
                    try:
                        if not conn.ready:
                            if conn.handshake():
                                serial += 1
                                tally.outstanding.add(serial)
                                conn.send(maker.make(conn.local_port, serial))
                            continue
                        for status, cseq in conn.on_event(events):
                            if tally.check(status, cseq):
                                parked.append(conn)
                                busy -= 1
                    except (ConnectionClosed, OSError, ssl.SSLError) as e:
                        raise ScenarioError(
                            f"a connection failed or was closed by the server ({e!r}) "
                            f"with {len(parked)} idle connections open"
                        ) from e
            time.sleep(settle)
            # A server that dropped idle connections shows up as readable EOFs.
            for key, events in sel.select(0):
                try:
                    key.data.on_event(events)
                except (ConnectionClosed, OSError, ssl.SSLError) as e:
                    raise ScenarioError(
                        f"the server closed an idle connection ({e!r}) with {len(parked)} open"
                    ) from e
            now = memory()
            out[f"kib_{target}"] = now
            out[f"kib_per_conn_{target}"] = (now - base) / target
    finally:
        for conn in parked:
            conn.close()
        for key in list(sel.get_map().values()):
            key.data.close()
        sel.close()
    out.update(tally.figures())
    return out


def probe(addr: tuple[str, int], timeout: float = 2.0) -> int:
    """Send one OPTIONS on a new connection and return the response status."""
    ctx = client_context()
    with socket.create_connection(addr, timeout=timeout) as raw:
        with ctx.wrap_socket(raw) as tls:
            tls.sendall(RequestMaker(addr[0], addr[1], "probe").make(tls.getsockname()[1], 1))
            reader = ResponseReader()
            while True:
                data = tls.recv(65536)
                if not data:
                    raise ConnectionClosed("the server closed the connection without answering")
                got = reader.feed(data)
                if got:
                    return got[0][0]
