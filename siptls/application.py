"""The default application: a SIP endpoint that answers OPTIONS.

It answers ``OPTIONS`` with ``200 OK``, never answers ``ACK``, answers any
other request with ``501 Not Implemented`` and drops stray responses with
a log line.  Applications with more to do implement
:class:`siptls.interfaces.ISIPApplication` themselves.
"""

from __future__ import annotations

from twisted.logger import Logger
from zope.interface import implementer

from siptls import __version__
from siptls.interfaces import ISIPApplication, ISIPConnection
from siptls.message import Request, Response

__all__ = ["OptionsResponder"]

_SERVER = b"siptls/" + __version__.encode("ascii")


@implementer(ISIPApplication)
class OptionsResponder:
    """Answer OPTIONS with 200 OK, everything else (but ACK) with 501."""

    log = Logger()

    allow = b"OPTIONS, ACK"
    accept = b"application/sdp"
    supported = b""

    def __init__(self) -> None:
        # Rendered once: every OPTIONS gets the same lines.
        self._options_headers = b"\r\n".join(
            [
                b"Allow: " + self.allow,
                b"Accept: " + self.accept,
                b"Supported: " + self.supported,
                b"Server: " + _SERVER,
            ]
        )
        self._not_implemented_headers = b"Allow: " + self.allow + b"\r\nServer: " + _SERVER

    def requestReceived(self, request: Request, connection: ISIPConnection) -> None:
        method = request.method
        if method == b"OPTIONS":
            connection.reply(request, 200, None, self._options_headers)
        elif method != b"ACK":
            connection.reply(request, 501, None, self._not_implemented_headers)

    def responseReceived(self, response: Response, connection: ISIPConnection) -> None:
        self.log.info(
            "Dropped a stray response {status} from {peer}: no transaction here.",
            status=response.status,
            peer=connection.remote,
            connection_id=connection.id,
        )

    def connectionOpened(self, connection: ISIPConnection) -> None:
        pass

    def connectionClosed(self, connection: ISIPConnection, reason: str) -> None:
        pass
