"""The control channel: AMP commands, the responder locator, the socket service, the CLI."""
