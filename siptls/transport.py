"""TCP listening ports whose connections send at once when they can.

Twisted's TCP ``write`` always buffers and waits for the reactor to report
the socket writable, which costs two ``epoll_ctl`` calls and a loop
iteration for every reply.  A SIP server writes one small reply per request
into a socket that is almost always writable, so :class:`DirectServer` tries
``send`` straight away when nothing is buffered, and hands only what the
kernel did not take to Twisted's normal buffered path (which also keeps
producers, errors and closing working as usual).
"""

from __future__ import annotations

import errno
from typing import Any

from twisted.internet import tcp

__all__ = ["DirectPort", "DirectServer", "listen_direct"]

_RETRY = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ENOBUFS})


class DirectServer(tcp.Server):
    """An accepted TCP connection that writes without waiting when it can."""

    # Twisted formats this for every accepted connection and keeps it for the
    # connection's life, only for repr(); make it on demand instead.
    @property
    def repstr(self) -> str:
        port = self.server._realPortNumber
        return f"<{type(self.protocol).__name__} #{self.sessionno} on {port}>"

    @repstr.setter
    def repstr(self, value: str) -> None:
        pass

    def write(self, data: bytes) -> None:
        if (
            data
            and self.connected
            and not self._writeDisconnected
            and not self.disconnecting
            and not self._tempDataLen
            and self.offset == len(self.dataBuffer)
        ):
            try:
                sent = self.socket.send(data)
            except OSError as error:
                if error.errno not in _RETRY:
                    # Let Twisted's own write path meet and report the error.
                    super().write(data)
                    return
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        super().write(data)


class DirectPort(tcp.Port):
    """A TCP port whose accepted connections are :class:`DirectServer`."""

    transport = DirectServer


def listen_direct(
    reactor: Any, port: int, factory: Any, interface: str = "", backlog: int = 1024
) -> DirectPort:
    """Like ``reactor.listenTCP``, with :class:`DirectServer` connections."""
    listening = DirectPort(port, factory, backlog, interface, reactor)
    listening.startListening()
    return listening
