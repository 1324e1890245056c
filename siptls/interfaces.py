"""The seams an application implements or uses (``zope.interface``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from collections.abc import Iterable

    from siptls.message import Request, Response, SIPMessage

__all__ = ["IControlTarget", "ISIPApplication", "ISIPConnection"]


class ISIPConnection(Interface):
    """One established (or establishing) SIP-over-TLS connection."""

    id = Attribute("The connection's id in the registry (an int).")
    direction = Attribute('"in" for accepted connections, "out" for ones we opened.')
    local = Attribute("The local (host, port).")
    remote = Attribute("The peer's (host, port).")
    tls = Attribute(
        "A siptls.tlsinfo.TLSInfo with the negotiated TLS facts, or None before the handshake."
    )

    def send(message: bytes | SIPMessage) -> None:
        """Send a SIP message (bytes, or a siptls.message.SIPMessage).

        Before the handshake completes the bytes are queued and sent in
        order afterwards.  Raises siptls.errors.SendError when the queue
        or the connection cannot take them.
        """

    def reply(
        request: SIPMessage,
        status: int,
        reason: str | None = None,
        headers: Iterable[tuple[bytes, bytes]] | bytes = (),
    ) -> None:
        """Send a response to ``request`` on this connection (RFC 3261 §18.2.2).

        ``headers`` are extra ``(name, value)`` pairs, or lines already
        joined with CRLF.
        """

    def close() -> None:
        """Close the connection gracefully."""


class ISIPApplication(Interface):
    """Receives what arrives on siptls connections.

    Every method is called in the reactor thread and must not block.
    """

    def requestReceived(request: Request, connection: ISIPConnection) -> None:
        """A well-formed request arrived (a siptls.message.Request)."""

    def responseReceived(response: Response, connection: ISIPConnection) -> None:
        """A response arrived (a siptls.message.Response)."""

    def connectionOpened(connection: ISIPConnection) -> None:
        """The TLS handshake of ``connection`` completed."""

    def connectionClosed(connection: ISIPConnection, reason: str) -> None:
        """``connection`` closed; ``reason`` says why in a short sentence."""


# ---------------------------------------------------------------------------
# Control channel (siptls.control): what the running server offers to
# ``siptls-ctl``.  Owned by the control work; other interfaces go in their
# own blocks below.
# ---------------------------------------------------------------------------


class IControlTarget(Interface):
    """The running server, as the control channel sees it.

    `siptls.control.locator.ControlLocator` answers ``tls.info``,
    ``tls.options`` and ``tls.reload`` from an object providing this, and the
    connection commands from a `siptls.registry.ConnectionRegistry`.
    """

    def generation() -> int:
        """The generation number of the configuration now in use (1 at startup)."""

    def uptime() -> float:
        """Seconds since the server started."""

    def options() -> tuple[list[tuple[str, object]], list[tuple[str, list[tuple[str, object]]]]]:
        """The effective configuration, for display.

        Returns ``(globals, domains)``: ``globals`` is a list of
        ``(parameter name, value)`` pairs, one per effective module
        parameter; ``domains`` is a list of ``(domain name, settings)``, where
        the name is e.g. ``"TLSs<default>"`` and ``settings`` is a list of
        ``(name, value)`` pairs (file paths, method, verify mode, server_name,
        certificate subject and notAfter, ...).  Values are shown with
        ``str()``; ``None`` is shown as an empty string.  Never include
        private key material or passwords.
        """

    def reload() -> object:
        """Load the configuration again and swap it in.

        Returns the new generation number, or a Deferred firing with it.  A
        refused reload raises (or errbacks with) `siptls.errors.ConfigError`
        whose message says what is wrong; the old configuration stays in use.
        """
