"""The seams of siptls: interfaces an application implements or replaces."""

from __future__ import annotations

from zope.interface import Interface

__all__ = ["IControlTarget"]


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
