"""Helpers for outgoing-connection tests: certificates on disk, a recording application."""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer, reactor
from zope.interface import implementer

from siptls.application import OptionsResponder
from siptls.interfaces import ISIPApplication, ISIPConnection
from siptls.message import Request, Response
from tests.certs import Issued, make_ca, make_leaf


@implementer(ISIPApplication)
class Recorder(OptionsResponder):
    """Answers OPTIONS like the default application and records everything."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[Request, ISIPConnection]] = []
        self.responses: list[tuple[Response, ISIPConnection]] = []
        self.opened: list[ISIPConnection] = []
        self.closed: list[tuple[ISIPConnection, str]] = []
        self._waiting: list[tuple[int, defer.Deferred[None]]] = []
        self._waiting_closed: list[defer.Deferred[str]] = []

    def requestReceived(self, request: Request, connection: ISIPConnection) -> None:
        self.requests.append((request, connection))
        super().requestReceived(request, connection)

    def responseReceived(self, response: Response, connection: ISIPConnection) -> None:
        self.responses.append((response, connection))
        for count, waiter in list(self._waiting):
            if len(self.responses) >= count:
                self._waiting.remove((count, waiter))
                waiter.callback(None)

    def connectionOpened(self, connection: ISIPConnection) -> None:
        self.opened.append(connection)

    def connectionClosed(self, connection: ISIPConnection, reason: str) -> None:
        self.closed.append((connection, reason))
        waiting, self._waiting_closed = self._waiting_closed, []
        for waiter in waiting:
            waiter.callback(reason)

    def wait_responses(self, count: int, timeout: float = 10) -> defer.Deferred[None]:
        """Fire once ``count`` responses arrived; fail after ``timeout`` seconds."""
        waiter: defer.Deferred[None] = defer.Deferred()
        if len(self.responses) >= count:
            waiter.callback(None)
            return waiter
        self._waiting.append((count, waiter))
        return waiter.addTimeout(timeout, reactor)

    def wait_closed(self, timeout: float = 10) -> defer.Deferred[str]:
        """Fire with the reason of the next connectionClosed."""
        waiter: defer.Deferred[str] = defer.Deferred()
        self._waiting_closed.append(waiter)
        return waiter.addTimeout(timeout, reactor)


class Material:
    """A CA and a directory to write certificates into."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self.ca = make_ca()
        self.ca_path = os.path.join(directory, "ca.pem")
        with open(self.ca_path, "wb") as handle:
            handle.write(self.ca.cert_pem())
        self._count = 0

    def leaf(self, **kwargs: Any) -> tuple[str, str]:
        """Write a leaf signed by the CA (see ``make_leaf``); return (cert, key) paths."""
        return self.write(make_leaf(self.ca, **kwargs))

    def write(self, issued: Issued) -> tuple[str, str]:
        self._count += 1
        return issued.write(self.directory, f"leaf{self._count}")

    def tls_cfg(self, text: str) -> str:
        """Write a tls.cfg; ``{ca}`` in ``text`` becomes the CA path."""
        self._count += 1
        path = os.path.join(self.directory, f"tls{self._count}.cfg")
        with open(path, "w") as handle:
            handle.write(text.replace("{ca}", self.ca_path))
        return path
