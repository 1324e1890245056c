"""The seams an application implements or uses (``zope.interface``)."""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = ["ISIPApplication", "ISIPConnection"]


class ISIPConnection(Interface):
    """One established (or establishing) SIP-over-TLS connection."""

    id = Attribute("The connection's id in the registry (an int).")
    direction = Attribute('"in" for accepted connections, "out" for ones we opened.')
    local = Attribute("The local (host, port).")
    remote = Attribute("The peer's (host, port).")
    tls = Attribute(
        "A siptls.tlsinfo.TLSInfo with the negotiated TLS facts, or None before the handshake."
    )

    def send(message: object) -> None:
        """Send a SIP message (bytes, or a siptls.message.SIPMessage).

        Before the handshake completes the bytes are queued and sent in
        order afterwards.  Raises siptls.errors.SendError when the queue
        or the connection cannot take them.
        """

    def reply(request: object, status: int, reason: str | None = None, headers: object = ()) -> None:
        """Send a response to ``request`` on this connection (RFC 3261 §18.2.2)."""

    def close() -> None:
        """Close the connection gracefully."""


class ISIPApplication(Interface):
    """Receives what arrives on siptls connections.

    Every method is called in the reactor thread and must not block.
    """

    def requestReceived(request: object, connection: ISIPConnection) -> None:
        """A well-formed request arrived (a siptls.message.Request)."""

    def responseReceived(response: object, connection: ISIPConnection) -> None:
        """A response arrived (a siptls.message.Response)."""

    def connectionOpened(connection: ISIPConnection) -> None:
        """The TLS handshake of ``connection`` completed."""

    def connectionClosed(connection: ISIPConnection, reason: str) -> None:
        """``connection`` closed; ``reason`` says why in a short sentence."""
