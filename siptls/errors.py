"""Every error siptls raises on purpose, rooted in one class.

Messages are full sentences naming the bad value, so they can be shown to an
operator as they are, without a traceback.
"""

from __future__ import annotations


class SIPTLSError(Exception):
    """The root of every error siptls raises on purpose."""


class ProtocolError(SIPTLSError):
    """The peer sent bytes that cannot be framed or parsed as SIP.

    ``status_hint`` is the SIP status a server should answer with before it
    closes the connection (400, 413, 505, 513, ...).
    """

    def __init__(self, message: str, status_hint: int = 400) -> None:
        super().__init__(message)
        self.status_hint = status_hint

    @property
    def reason(self) -> str:
        return str(self)


class ConfigError(SIPTLSError):
    """A configuration value is wrong.

    ``source`` names where it came from (a file name, ``--param`` or
    ``--listen``), ``line`` the line in that file when there is one, ``key``
    the parameter or section key.  ``str()`` gives one line an operator can
    act on, e.g. ``tls.cfg:12: [server:default] unknown method 'TLSv9' ...``.
    """

    def __init__(
        self,
        message: str,
        source: str | None = None,
        line: int | None = None,
        key: str | None = None,
        section: str | None = None,
    ) -> None:
        self.message = message
        self.source = source
        self.line = line
        self.key = key
        self.section = section
        super().__init__(self.describe())

    def describe(self) -> str:
        where = ""
        if self.source is not None:
            where = self.source
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        if self.section is not None:
            where += f"[{self.section}] "
        return where + self.message


class SendError(SIPTLSError):
    """A message could not be sent (queue full, connection failed, no route)."""


class ControlError(SIPTLSError):
    """A control command failed (unknown connection id, reload refused, ...)."""


class IdentityError(SIPTLSError):
    """A peer certificate's identities could not be read or matched.

    ``reference`` is the SIP domain or IP address being checked, when known.
    """

    def __init__(self, message: str, reference: str | None = None) -> None:
        super().__init__(message)
        self.reference = reference


class ResolutionError(SIPTLSError):
    """A SIP target could not be parsed or resolved to addresses.

    ``name`` is the target string or DNS name that failed, when known.
    """

    def __init__(self, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


class UnknownConnectionError(ControlError):
    """A control command named a connection id that the registry does not hold.

    ``connection_id`` is the id asked for when it is known; over AMP only the
    message travels, so on the client side it is ``None``.
    """

    def __init__(self, message: str, connection_id: int | None = None) -> None:
        super().__init__(message)
        self.connection_id = connection_id


class ControlSocketError(ControlError):
    """The control socket cannot be set up or reached.

    ``path`` is the socket's file system path when it is known.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path
