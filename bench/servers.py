"""The servers under test: how to find, configure, start, probe and stop each one.

Every server gets the same certificate and key, listens on 127.0.0.1 on a
free port, and is started in its own session so it can be stopped by its
process-group id.  A server whose program is missing is reported as
skipped (with the reason) rather than failing the whole run.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import loadgen

HERE = Path(__file__).resolve().parent

SIPTLS_TEMPLATE = (
    "{twistd} -n --pidfile= siptls --no-control --param tls_max_connections=30000 "
    "--param log_connections=no --listen tls:127.0.0.1:{port} "
    "--certificate {cert} --private-key {key}"
)

# One TCP/TLS worker so the comparison with a one-process Twisted server is
# fair; limits raised for the 10,000-connection idle test.  The route answers
# OPTIONS statelessly and logs nothing.
KAMAILIO_CFG = """#!KAMAILIO
debug=-1
log_stderror=yes
memdbg=5
memlog=5
mem_summary=0
children=1
tcp_children=1
auto_aliases=no
enable_tls=yes
listen=tls:127.0.0.1:{port}
tcp_max_connections={max_connections}
tls_max_connections={max_connections}
open_files_limit={open_files}
tcp_connection_lifetime=3600
tcp_accept_no_cl=yes

loadmodule "tls.so"
modparam("tls", "config", "{tls_cfg}")
loadmodule "sl.so"

request_route {{
    if (method == "OPTIONS") {{
        sl_send_reply("200", "OK");
        exit;
    }}
    sl_send_reply("501", "Not Implemented");
}}
"""

KAMAILIO_TLS_CFG = """[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
certificate = {cert}
private_key = {key}
"""


class ServerUnavailable(Exception):
    """The server's program is not installed or does not start; the reason is the message."""


@dataclass
class Options:
    kamailio: str | None
    twistd: str | None
    siptls_cmd: str
    standin_python: str
    kamailio_shm_mb: int = 2048
    max_connections: int = 12000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_standin_python() -> str:
    return sys.executable


def default_twistd() -> str | None:
    sibling = Path(sys.executable).with_name("twistd")
    return str(sibling) if sibling.exists() else shutil.which("twistd")


class Server:
    """One running server process (tree)."""

    #: CPUs the server processes may run on (None: any); set by run.py's --pin.
    cpus: set[int] | None = None

    def __init__(self, name: str, argv: list[str], workdir: Path, port: int) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> None:
        log = open(self.log_path, "wb")
        cpus = self.cpus

        def pin() -> None:
            if cpus:
                os.sched_setaffinity(0, cpus)

        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=pin if cpus else None,
        )
        log.close()
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerUnavailable(
                    f"{self.name} exited with status {self.proc.returncode} before answering; "
                    f"last log lines:\n{self.log_tail()}"
                )
            try:
                status = loadgen.probe(("127.0.0.1", self.port), timeout=2.0)
            except (OSError, loadgen.ConnectionClosed) as e:
                last = e
                time.sleep(0.2)
                continue
            if status != 200:
                self.stop()
                raise ServerUnavailable(f"{self.name} answered OPTIONS with {status}, not 200")
            return
        self.stop()
        raise ServerUnavailable(
            f"{self.name} did not answer OPTIONS on 127.0.0.1:{self.port} within {timeout:.0f} s "
            f"(last error: {last}); last log lines:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            # Only the process group this harness created.
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def build(name: str, opts: Options, workdir: Path, cert: Path, key: Path) -> Server:
    """Prepare (but do not start) server ``name``; raises ServerUnavailable if it cannot run."""
    port = free_port()
    if name == "kamailio":
        if not opts.kamailio or not shutil.which(opts.kamailio):
            raise ServerUnavailable(
                "kamailio is not installed (apt-get install kamailio kamailio-tls-modules)"
            )
        tls_cfg = workdir / "kamailio-tls.cfg"
        tls_cfg.write_text(KAMAILIO_TLS_CFG.format(cert=cert, key=key))
        cfg = workdir / "kamailio.cfg"
        cfg.write_text(
            KAMAILIO_CFG.format(
                port=port,
                tls_cfg=tls_cfg,
                max_connections=opts.max_connections,
                open_files=_nofile(),
            )
        )
        argv = [
            opts.kamailio,
            "-f",
            str(cfg),
            "-DD",
            "-E",
            "-m",
            str(opts.kamailio_shm_mb),
            "-M",
            "16",
        ]
        return Server(name, argv, workdir, port)
    if name == "standin":
        argv = [
            opts.standin_python,
            str(HERE / "standin.py"),
            "--port",
            str(port),
            "--certificate",
            str(cert),
            "--private-key",
            str(key),
        ]
        return Server(name, argv, workdir, port)
    if name == "siptls":
        command = opts.siptls_cmd.format(
            twistd=opts.twistd or "twistd", port=port, cert=cert, key=key
        )
        argv = shlex.split(command)
        if not shutil.which(argv[0]):
            raise ServerUnavailable(
                f"siptls: {argv[0]!r} not found (pass --twistd or --siptls-cmd)"
            )
        if "{twistd}" in opts.siptls_cmd:
            check = subprocess.run([argv[0], "siptls", "--help"], capture_output=True, timeout=60)
            if check.returncode != 0:
                raise ServerUnavailable(
                    f"siptls: {argv[0]} has no 'siptls' plugin (is siptls installed in that "
                    f"venv, with 'pip install .'?); pass --twistd or --siptls-cmd"
                )
        return Server(name, argv, workdir, port)
    raise ServerUnavailable(f"unknown server {name!r} (known: siptls, kamailio, standin)")


def _nofile() -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
