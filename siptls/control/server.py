"""The control socket: a UNIX-domain AMP listener the ``siptls-ctl`` client talks to.

The socket is private to the user running the server: its directory is created
with mode 0700 when missing, and the socket itself is created with mode 0600
(under a temporary umask, so it is never reachable with wider permissions).

A socket file left behind by a crashed server is detected at start (connecting
to it is refused), logged and replaced; a socket with a live server behind it
is an error, so two servers never steal each other's control channel.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IAddress, IListeningPort, IReactorUNIX
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from siptls.errors import ControlSocketError

__all__ = ["ControlService", "default_control_path"]

_SOCKET_NAME = "control.sock"


def default_control_path(
    environ: Mapping[str, str] | None = None,
    euid: int | None = None,
    home: str | None = None,
) -> str:
    """Where the control socket lives unless ``--control`` says otherwise.

    In order of preference:

    1. ``$SIPTLS_CONTROL_SOCKET`` when set (server and client agree on it);
    2. ``$XDG_RUNTIME_DIR/siptls/control.sock`` when ``XDG_RUNTIME_DIR`` is an
       absolute path to a directory we can write to (a per-user tmpfs on
       systemd systems, cleaned at logout);
    3. ``/run/siptls/control.sock`` when running as root (a system service);
    4. ``~/.siptls/control.sock`` otherwise.

    A server run as root with ``XDG_RUNTIME_DIR`` set (``sudo -E``) therefore
    listens under that directory; pass ``--control`` on both sides to pin a path.
    The arguments replace ``os.environ``, ``os.geteuid()`` and the home
    directory, for tests.
    """
    env = os.environ if environ is None else environ
    explicit = env.get("SIPTLS_CONTROL_SOCKET")
    if explicit:
        return explicit
    runtime = env.get("XDG_RUNTIME_DIR")
    if (
        runtime
        and os.path.isabs(runtime)
        and os.path.isdir(runtime)
        and os.access(runtime, os.W_OK | os.X_OK)
    ):
        return os.path.join(runtime, "siptls", _SOCKET_NAME)
    if (os.geteuid() if euid is None else euid) == 0:
        return os.path.join("/run/siptls", _SOCKET_NAME)
    base = os.path.expanduser("~") if home is None else home
    return os.path.join(base, ".siptls", _SOCKET_NAME)


class _ControlProtocol(amp.AMP):
    """AMP that tells the service of connects and disconnects (to close them on stop)."""

    def __init__(self, service: ControlService, locator: amp.CommandLocator) -> None:
        super().__init__(locator=locator)
        self._service = service
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        super().connectionMade()
        self._service._clients.add(self)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._service._clients.discard(self)
        super().connectionLost(reason)
        self.closed.callback(None)


class _ControlFactory(Factory):
    """Builds one AMP protocol, with its own locator, per control connection."""

    def __init__(self, service: ControlService) -> None:
        self._service = service

    def buildProtocol(self, addr: IAddress | None) -> _ControlProtocol:
        return _ControlProtocol(self._service, self._service._locator_factory())


class ControlService(Service):
    """Serve the control commands on the UNIX socket at ``path``.

    ``locator_factory`` makes one `amp.CommandLocator` per control connection
    (normally ``lambda: ControlLocator(registry, target)``).  `startService`
    raises `ControlSocketError` when the socket cannot be set up, in
    particular when another server is already listening on it.
    """

    _log = Logger()

    def __init__(
        self,
        path: str,
        locator_factory: Callable[[], amp.CommandLocator],
        reactor: IReactorUNIX,
    ) -> None:
        self.path = path
        self._locator_factory = locator_factory
        self._reactor = reactor
        self._port: IListeningPort | None = None
        self._inode: tuple[int, int] | None = None
        self._clients: set[_ControlProtocol] = set()

    def startService(self) -> None:
        self._prepare_directory()
        self._clear_stale_socket()
        factory = _ControlFactory(self)
        previous_umask = os.umask(0o177)
        try:
            self._port = self._reactor.listenUNIX(self.path, factory, mode=0o600)
        except CannotListenError as e:
            raise ControlSocketError(
                f"cannot listen on the control socket at {self.path}: {e.socketError}.",
                self.path,
            ) from e
        finally:
            os.umask(previous_umask)
        st = os.stat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        self._log.info("Control socket listening at {path}", path=self.path)
        super().startService()

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        waiting: list[Deferred[Any]] = []
        for client in list(self._clients):
            waiting.append(client.closed)
            if client.transport is not None:
                client.transport.loseConnection()
        port, self._port = self._port, None
        if port is not None:
            stopped: Deferred[Any] = maybeDeferred(port.stopListening)
            waiting.append(stopped.addBoth(self._remove_socket))
        return gatherResults(waiting).addCallback(lambda _: None)

    def _remove_socket(self, result: object) -> object:
        # The listening port normally unlinks its path; make sure, but never
        # remove a socket that another server has put there since.
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return result
        if (st.st_dev, st.st_ino) == self._inode:
            os.unlink(self.path)
        return result

    def _prepare_directory(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        if os.path.isdir(directory):
            return
        try:
            os.makedirs(directory, mode=0o700)
            os.chmod(directory, 0o700)
        except OSError as e:
            raise ControlSocketError(
                f"cannot create the control socket directory {directory}: {e.strerror}.",
                self.path,
            ) from e

    def _clear_stale_socket(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlSocketError(
                f"{self.path} exists and is not a socket; remove it or choose another "
                "control socket path.",
                self.path,
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(2.0)
        try:
            probe.connect(self.path)
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.ECONNREFUSED:
                raise ControlSocketError(
                    f"cannot check the existing control socket at {self.path}: {e.strerror}.",
                    self.path,
                ) from e
        else:
            raise ControlSocketError(
                f"another siptls server is already listening on the control socket at "
                f"{self.path}; stop it or choose another control socket path.",
                self.path,
            )
        finally:
            probe.close()
        self._log.warn(
            "Replacing stale control socket {path} left by a server that is no longer running",
            path=self.path,
        )
        os.unlink(self.path)
