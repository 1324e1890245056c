"""Long-lived peers for interop tests: an ``openssl s_client`` kept open while we look.

`support.run_process` runs a peer to completion; the operations tests need
peers that stay connected while the control channel lists, kills and reloads,
that can be written to later, and whose stdin can be closed.  `Peer` is such
a process; `local_port` finds which port its TCP connection uses, so a
listing can be matched to the process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.python.failure import Failure

__all__ = ["Peer", "local_port", "run_closing_stdin", "s_client", "spawn"]


class Peer(protocol.ProcessProtocol):
    """A running peer process: its output so far, and Deferreds for what it prints."""

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.exit_code: int | None = None
        self.ended: defer.Deferred[int] = defer.Deferred()
        self._waiters: list[tuple[bytes, int, defer.Deferred[bytes]]] = []
        self._killer: Any = None

    @property
    def pid(self) -> int:
        return int(self.transport.pid)

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def close_stdin(self) -> None:
        self.transport.closeStdin()

    def kill(self) -> None:
        if self.exit_code is None:
            try:
                self.transport.signalProcess("KILL")
            except Exception:
                pass

    def wait_for(self, text: bytes, count: int = 1, timeout: float = 10) -> defer.Deferred[bytes]:
        """Fires with the output once ``text`` appeared ``count`` times; fails after ``timeout``."""
        d: defer.Deferred[bytes] = defer.Deferred()
        self._waiters.append((text, count, d))
        self._check()
        if not d.called:
            d.addTimeout(timeout, reactor)
        return d

    def outReceived(self, data: bytes) -> None:
        self.out += data
        self._check()

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        if self._killer is not None and self._killer.active():
            self._killer.cancel()
        code = getattr(reason.value, "exitCode", None)
        self.exit_code = -1 if code is None else int(code)
        self.ended.callback(self.exit_code)

    def _check(self) -> None:
        for waiter in list(self._waiters):
            text, count, d = waiter
            if self.out.count(text) >= count:
                self._waiters.remove(waiter)
                if not d.called:
                    d.callback(self.out)


def spawn(
    executable: str,
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
    path: str | None = None,
) -> Peer:
    """Start a peer (in directory ``path``); it is killed after ``timeout`` s if still running."""
    peer = Peer()
    environment = dict(os.environ)
    environment.update(env or {})
    reactor.spawnProcess(peer, executable, [executable, *args], env=environment, path=path)
    peer._killer = reactor.callLater(timeout, peer.kill)
    return peer


def s_client(openssl: str, port: int, *extra: str, timeout: float = 60) -> Peer:
    """``openssl s_client`` to 127.0.0.1:``port``, printing the certificate and cipher."""
    return spawn(
        openssl, ["s_client", "-connect", f"127.0.0.1:{port}", "-no_ign_eof", *extra], None, timeout
    )


def run_closing_stdin(
    executable: str,
    args: Sequence[str],
    stdin: bytes = b"",
    env: Mapping[str, str] | None = None,
    timeout: float = 20,
) -> defer.Deferred[tuple[bytes, bytes, int]]:
    """Run a process to its end, writing ``stdin`` and then closing it."""
    peer = spawn(executable, args, env, timeout)
    if stdin:
        peer.write(stdin)
    peer.close_stdin()
    return peer.ended.addCallback(lambda code: (peer.out, peer.err, code))


def local_port(pid: int, remote_port: int) -> int | None:
    """The local TCP port of ``pid``'s connection to 127.0.0.1:``remote_port`` (Linux /proc)."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        for name in os.listdir(fd_dir):
            try:
                target = os.readlink(os.path.join(fd_dir, name))
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        with open("/proc/net/tcp") as table:
            lines = table.read().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if inode in inodes and int(remote.split(":")[1], 16) == remote_port:
            return int(local.split(":")[1], 16)
    return None
